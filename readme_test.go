package signals_test

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestReadmeShowsTheQuickstart keeps the README's quick start identical to
// the program that make test runs.
func TestReadmeShowsTheQuickstart(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	program, err := os.ReadFile("examples/quickstart/main.go")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(readme), "```go\n"+string(program)+"```\n"),
		"README.md must show examples/quickstart/main.go verbatim in a go block")
}
