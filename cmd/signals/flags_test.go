package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// commandLines are every command's words before its flags.
var commandLines = [][]string{
	{"status"}, {"dead", "list"}, {"dead", "show"}, {"dead", "requeue"}, {"dead", "discard"},
	{"inbox"}, {"migrate"}, {"relay"}, {"web"},
}

// flagNames matches the flags a text names as --name.
var flagNames = regexp.MustCompile(`--([a-z][a-z-]*)`)

func TestFlags(t *testing.T) {
	t.Parallel()

	t.Run("help spells every flag --name, and the usage and README name only real flags", func(t *testing.T) {
		t.Parallel()
		defined := map[string]bool{}
		for _, words := range commandLines {
			r := runSignals(t, nil, append(words, "-h")...)
			requireCode(t, exitOK, r)
			require.Regexp(t, `(?m)^  --schema NAME$`, r.stdout, "signals %s -h", strings.Join(words, " "))
			require.NotRegexp(t, `(?m)^\s*-[a-z]`, r.stdout, "signals %s -h: a flag spelled -name", strings.Join(words, " "))
			for _, m := range regexp.MustCompile(`(?m)^  --([a-z-]+)`).FindAllStringSubmatch(r.stdout, -1) {
				defined[m[1]] = true
			}
		}
		readme, err := os.ReadFile("../../README.md")
		require.NoError(t, err)
		operating, _, _ := strings.Cut(string(readme)[strings.Index(string(readme), "## Operating it"):], "\n## Scaling out")
		for text, name := range map[string]string{usage: "the usage", operating: "README's Operating it"} {
			for _, m := range flagNames.FindAllStringSubmatch(text, -1) {
				require.True(t, defined[m[1]], "%s names --%s, which no command defines", name, m[1])
			}
			require.NotRegexp(t, "[ `(]-(json|sql|yes|all|schema)\\b", text, "%s spells a flag -name", name)
		}
	})

	// Each case is a command line, the command whose help explains it and
	// what it says is wrong, once, on stderr.
	type mistake struct{ args, command, msg string }
	check := func(t *testing.T, env []string, cases []mistake) {
		t.Helper()
		for _, tc := range cases {
			r := runSignals(t, env, strings.Fields(tc.args)...)
			requireCode(t, exitUsage, r)
			require.Equal(t, "signals "+tc.command+": "+tc.msg+"\nrun 'signals "+tc.command+" -h' for help\n", r.stderr, "signals %s", tc.args)
			require.Empty(t, r.stdout)
		}
	}

	t.Run("a mistyped flag gets a suggestion, without every flag", func(t *testing.T) {
		t.Parallel()
		check(t, nil, []mistake{
			{"dead list --jsn", "dead list", "unknown flag --jsn; did you mean --json?"},
			{"dead list -jsn", "dead list", "unknown flag --jsn; did you mean --json?"},
			{"dead requeue --reciever r", "dead requeue", "unknown flag --reciever; did you mean --receiver?"},
			{"status --max-pending 1m", "status", "unknown flag --max-pending; did you mean --max-pending-age?"},
			{"migrate --sq", "migrate", "unknown flag --sq; did you mean --sql?"},
			{"relay --verbose", "relay", "unknown flag --verbose"},
		})
	})

	t.Run("a bad value says what a good one looks like", func(t *testing.T) {
		t.Parallel()
		check(t, serverEnv(), []mistake{
			{"dead list --older-than 3x", "dead list", `--older-than: invalid duration "3x": use a Go duration such as 90s, 15m or 72h`},
			{"inbox prune --older-than 30d", "inbox", `--older-than: invalid duration "30d": use a Go duration such as 90s, 15m or 72h`},
			{"status --max-pending-age soon", "status", `--max-pending-age: invalid duration "soon": use a Go duration such as 90s, 15m or 72h`},
			{"status --timeout", "status", `--timeout needs a value: --timeout D`},
			{"dead list --limit many", "dead list", `--limit: invalid number "many": use a whole number such as 100`},
			{"dead list --limit 0", "dead list", `--limit must be positive, such as 100`},
			{"dead list --json=maybe", "dead list", `--json is a switch: give --json, or --json=false, not --json=maybe`},
			{"dead list --since yesterday", "dead list", `--since "yesterday" is neither an RFC 3339 time (2025-06-01T12:00:00Z) nor a duration (2h)`},
		})
	})
}

func TestDurationFlagShowsDurationsAsTyped(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]string{
		0:                       "0s",
		1500 * time.Millisecond: "1.5s",
		10 * time.Second:        "10s",
		time.Minute:             "1m",
		90 * time.Minute:        "1h30m",
		8760 * time.Hour:        "8760h",
		time.Hour + time.Second: "1h0m1s",
	} {
		require.Equal(t, want, (*durationFlag)(&d).String())
	}
}
