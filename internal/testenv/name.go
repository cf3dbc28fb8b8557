package testenv

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
)

// cleanupTimeout bounds one cleanup, so that a server that hangs fails the
// test instead of hanging it.
const cleanupTimeout = 30 * time.Second

// uniqueName returns prefix followed by a lowercase ULID and, when t and its
// subtests complete, passes it to drop. A ULID keeps names apart across
// parallel tests and test processes; lowercase keeps them valid unquoted SQL
// identifiers.
func uniqueName(t testing.TB, prefix string, drop func(ctx context.Context, name string) error) string {
	t.Helper()
	name := prefix + strings.ToLower(ulid.Make().String())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := drop(ctx, name); err != nil {
			t.Errorf("testenv: %v", err)
		}
	})
	return name
}
