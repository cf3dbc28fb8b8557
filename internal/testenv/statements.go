package testenv

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// Statements is a pgx.QueryTracer counting the statements a connection
// sends whose text starts with Prefix ("" counts them all). Set it as a
// pool's ConnConfig.Tracer. It is safe for concurrent use.
type Statements struct {
	Prefix string
	n      atomic.Int64
}

// Count returns how many matching statements were sent so far.
func (s *Statements) Count() int64 { return s.n.Load() }

// TraceQueryStart counts the statement.
func (s *Statements) TraceQueryStart(ctx context.Context, _ *pgx.Conn, q pgx.TraceQueryStartData) context.Context {
	if strings.HasPrefix(q.SQL, s.Prefix) {
		s.n.Add(1)
	}
	return ctx
}

// TraceQueryEnd does nothing.
func (s *Statements) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
