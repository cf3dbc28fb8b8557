package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSuggest(t *testing.T) {
	t.Parallel()
	flags := []string{"all", "database-url", "error", "json", "limit", "older-than", "receiver", "redis-addr", "schema", "signal", "since", "timeout", "yes"}
	for _, tc := range []struct{ typed, want string }{
		{"jsn", "json"},          // a letter left out
		{"jsoon", "json"},        // a letter doubled
		{"reciever", "receiver"}, // two letters swapped
		{"sigal", "signal"},
		{"older-then", "older-than"},
		{"databse-url", "database-url"},
		{"older", "older-than"}, // the start of one flag
		{"s", ""},               // the start of several
		{"verbose", ""},
		{"x", ""},
		{"", ""},
	} {
		require.Equal(t, tc.want, suggest(tc.typed, flags), "suggest(%q)", tc.typed)
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "abc", 3},
		{"json", "json", 0},
		{"jsn", "json", 1},
		{"stauts", "status", 1}, // a swap is one edit
		{"kitten", "sitting", 3},
		{"dead", "deal", 1},
		{"prnue", "prune", 1},
		{"é", "e", 1}, // runes, not bytes
	} {
		require.Equal(t, tc.want, editDistance(tc.a, tc.b), "editDistance(%q, %q)", tc.a, tc.b)
		require.Equal(t, tc.want, editDistance(tc.b, tc.a), "editDistance(%q, %q)", tc.b, tc.a)
	}
}
