package signals_test

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dj-signals/signals"
)

// optionDefaults are the receiver options' defaults, by the setting the
// README's row names.
var optionDefaults = map[string]any{
	"MaxRetries(n)":   signals.DefaultReceiverMaxRetries,
	"Timeout(d)":      signals.DefaultReceiverTimeout,
	"Backoff(min, _)": signals.DefaultReceiverBackoffMin,
	"Backoff(_, max)": signals.DefaultReceiverBackoffMax,
}

// configDefaults are the configs whose defaults WithDefaults sets, by the
// name the README's rows give them.
var configDefaults = map[string]reflect.Value{
	"RegistryConfig":   reflect.ValueOf(signals.RegistryConfig{}.WithDefaults()),
	"DispatcherConfig": reflect.ValueOf(signals.DispatcherConfig{}.WithDefaults()),
	"WorkerConfig":     reflect.ValueOf(signals.WorkerConfig{}.WithDefaults()),
}

// describedDefaults are the settings whose README row describes the
// default rather than stating a value: computed from the binary, or none.
var describedDefaults = map[string]bool{"RegistryConfig.Queue": true, "RegistryConfig.Codec": true}

// TestReadmeDefaultsTable keeps the README's defaults table in step with the
// code: every receiver option and every config field WithDefaults sets
// (but the Logger) has a row, and each row's default is the value the code uses.
func TestReadmeDefaultsTable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## Configuration and defaults\n")
	require.True(t, ok, "README.md has no \"Configuration and defaults\" section")
	section, _, _ = strings.Cut(section, "\n## ")

	row := regexp.MustCompile("(?m)^\\| `([^`|]+)`[^|]* \\| ([^|]+) \\|")
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		setting, shown := m[1], strings.TrimSpace(m[2])
		seen[setting] = true
		if value, ok := optionDefaults[setting]; ok {
			require.Equal(t, readable(value), shown, "README's default for %s", setting)
			continue
		}
		config, field, _ := strings.Cut(setting, ".")
		cfg, known := configDefaults[config]
		require.True(t, known, "README row names %s, which is neither a receiver option nor a config field", setting)
		value := cfg.FieldByName(field)
		require.True(t, value.IsValid(), "README row names %s, which %s lacks", setting, config)
		if !describedDefaults[setting] {
			require.Equal(t, readable(value.Interface()), shown, "README's default for %s", setting)
		}
	}
	for setting := range optionDefaults {
		require.True(t, seen[setting], "README's defaults table has no row for %s", setting)
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
