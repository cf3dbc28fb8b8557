package otelsignals

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadmeListsEveryInstrument keeps the README's metric tables, the one
// list of what otelsignals records (the core README links to it), in step
// with the instruments names.go declares: each listed once, none missing,
// none extra.
func TestReadmeListsEveryInstrument(t *testing.T) {
	t.Parallel()
	file, err := parser.ParseFile(token.NewFileSet(), "names.go", nil, 0)
	require.NoError(t, err)
	var declared []string
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range spec.Names {
			if strings.HasPrefix(name.Name, "metric") && i < len(spec.Values) {
				if lit, ok := spec.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if v, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(v, "signals.") {
						declared = append(declared, v)
					}
				}
			}
		}
		return true
	})
	require.NotEmpty(t, declared)

	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(signals\\.[a-z_.]+)` \\| (counter|histogram|`)").FindAllStringSubmatch(string(readme), -1) {
		listed = append(listed, m[1])
	}
	slices.Sort(declared)
	slices.Sort(listed)
	require.Equal(t, declared, listed, "README.md's metric tables must list each instrument of names.go once")
}
