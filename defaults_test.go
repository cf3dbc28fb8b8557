package signals_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

// defaults is every exported default, by name. TestReadmeDefaultsTable
// checks that it lists every Default* constant the package declares.
var defaults = map[string]any{
	"DefaultRegistrySchema":          signals.DefaultRegistrySchema,
	"DefaultRegistryMaxPayloadBytes": signals.DefaultRegistryMaxPayloadBytes,
	"DefaultRegistryMaxDepth":        signals.DefaultRegistryMaxDepth,
	"DefaultReceiverMaxRetries":      signals.DefaultReceiverMaxRetries,
	"DefaultReceiverTimeout":         signals.DefaultReceiverTimeout,
	"DefaultReceiverBackoffMin":      signals.DefaultReceiverBackoffMin,
	"DefaultReceiverBackoffMax":      signals.DefaultReceiverBackoffMax,
}

// configDefaults are the configs whose defaults WithDefaults sets, by the
// name the README's rows give them.
var configDefaults = map[string]reflect.Value{
	"DispatcherConfig": reflect.ValueOf(signals.DispatcherConfig{}.WithDefaults()),
	"WorkerConfig":     reflect.ValueOf(signals.WorkerConfig{}.WithDefaults()),
}

// TestReadmeDefaultsTable keeps the README's defaults table in step with the
// code: every Default* constant and every field WithDefaults sets (but the
// Logger) has a row, and each row's default is the value the code uses.
func TestReadmeDefaultsTable(t *testing.T) {
	t.Parallel()
	require.ElementsMatch(t, declaredDefaults(t), keys(defaults), "the defaults map above must list every Default* constant")

	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## Configuration and defaults\n")
	require.True(t, ok, "README.md has no \"Configuration and defaults\" section")
	section, _, _ = strings.Cut(section, "\n## ")

	row := regexp.MustCompile("(?m)^\\| `([^|]+)` \\| (`Default\\w+`|—) \\| ([^|]+) \\|")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		setting, constant, shown := m[1], strings.Trim(m[2], "`"), strings.TrimSpace(m[3])
		if constant != "—" {
			value, known := defaults[constant]
			require.True(t, known, "README row names %s, which is not a Default* constant", constant)
			require.Equal(t, readable(value), shown, "README's default for %s", constant)
			seen[constant] = true
			continue
		}
		config, field, _ := strings.Cut(setting, ".")
		cfg, known := configDefaults[config]
		if !known {
			continue // a default computed at run time, as RegistryConfig.Queue's: described, not a value
		}
		value := cfg.FieldByName(field)
		require.True(t, value.IsValid(), "README row names %s, which %s lacks", setting, config)
		require.Equal(t, readable(value.Interface()), shown, "README's default for %s", setting)
		seen[setting] = true
	}
	for name := range defaults {
		require.True(t, seen[name], "README's defaults table has no row for %s", name)
	}
	for config, cfg := range configDefaults {
		for i := range cfg.NumField() {
			f := cfg.Type().Field(i)
			if f.Name == "Logger" || cfg.Field(i).IsZero() {
				continue // not a default of its own, or none set
			}
			require.True(t, seen[config+"."+f.Name], "README's defaults table has no row for %s.%s", config, f.Name)
		}
	}
}

// declaredDefaults parses the package's source for its Default* constants.
func declaredDefaults(t *testing.T) []string {
	t.Helper()
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, 0)
	require.NoError(t, err)
	var names []string
	for _, f := range pkgs["signals"].Files {
		for _, decl := range f.Decls {
			gen, ok := decl.(*ast.GenDecl)
			if !ok || gen.Tok != token.CONST {
				continue
			}
			for _, spec := range gen.Specs {
				for _, n := range spec.(*ast.ValueSpec).Names {
					if n.IsExported() && strings.HasPrefix(n.Name, "Default") {
						names = append(names, n.Name)
					}
				}
			}
		}
	}
	return names
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// readable formats a default as the README shows it: `name` for strings,
// KiB or MiB for byte sizes, whole units for durations.
func readable(v any) string {
	switch v := v.(type) {
	case string:
		return "`" + v + "`"
	case time.Duration:
		for _, u := range []struct {
			d    time.Duration
			name string
		}{{time.Hour, "h"}, {time.Minute, "min"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
			if v%u.d == 0 {
				return fmt.Sprintf("%d %s", v/u.d, u.name)
			}
		}
		return v.String()
	case int:
		if v >= 1<<20 && v%(1<<20) == 0 {
			return fmt.Sprintf("%d MiB", v>>20)
		}
		if v >= 1<<10 && v%(1<<10) == 0 {
			return fmt.Sprintf("%d KiB", v>>10)
		}
		return fmt.Sprint(v)
	}
	return fmt.Sprint(v)
}
