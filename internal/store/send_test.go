package store

import (
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

var placeholder = regexp.MustCompile(`\$(\d+)`)

func TestInsertStatement(t *testing.T) {
	t.Parallel()
	q, err := New("s")
	require.NoError(t, err)

	// The event's values are $1..$8, shared by every row; each row's own
	// values (task ID, receiver, queue, max_retry, timeout_ms) follow.
	// Without ordering keys, both ordering columns are NULL.
	require.Equal(t, q.insertPrefix+"($9, $1, $2, $3, $4, $5, $10, $11, $12, $13, $6, $7, $8, NULL, NULL)", q.insertStatement(insertShape{rows: 1}))
	require.Equal(t, q.insertPrefix+
		"($9, $1, $2, $3, $4, $5, $10, $11, $12, $13, $6, $7, $8, NULL, NULL), "+
		"($14, $1, $2, $3, $4, $5, $15, $16, $17, $18, $6, $7, $8, NULL, NULL)", q.insertStatement(insertShape{rows: 2}))
	// With keys, each row has a sixth value, its key, which also decides
	// whether the row takes a number from the sequence.
	require.Equal(t, q.insertPrefix+
		"($9, $1, $2, $3, $4, $5, $10, $11, $12, $13, $6, $7, $8, NULLIF($14::text, ''), CASE WHEN $14::text = '' THEN NULL ELSE nextval('\"s\".\"ordering_seq\"') END), "+
		"($15, $1, $2, $3, $4, $5, $16, $17, $18, $19, $6, $7, $8, NULLIF($20::text, ''), CASE WHEN $20::text = '' THEN NULL ELSE nextval('\"s\".\"ordering_seq\"') END)",
		q.insertStatement(insertShape{rows: 2, keyed: true}))
	// The transaction's ID is the column's default: the sender writes none.
	require.NotContains(t, insertColumns, "xid")

	columns := strings.Count(insertColumns[strings.Index(insertColumns, "("):strings.Index(insertColumns, ")")], ",") + 1
	for _, shape := range []insertShape{{rows: 1}, {rows: 3}, {rows: 16}, {rows: 100}, {rows: 3, keyed: true}} {
		per := rowParams
		if shape.keyed {
			per++
		}
		sql := q.insertStatement(shape)
		values := strings.TrimPrefix(sql, q.insertPrefix)
		tuples := strings.Split(strings.TrimSuffix(strings.TrimPrefix(values, "("), ")"), "), (")
		require.Len(t, tuples, shape.rows, "one tuple per row")
		seen := map[int]int{}
		for _, tuple := range tuples {
			values := strings.Split(strings.ReplaceAll(tuple, "::text, ''", "::text ''"), ", ") // NULLIF's comma
			require.Len(t, values, columns, "a value per column")
			for _, m := range placeholder.FindAllStringSubmatch(tuple, -1) {
				p, err := strconv.Atoi(m[1])
				require.NoError(t, err)
				seen[p]++
			}
		}
		want := map[int]int{}
		for p := 1; p <= sharedParams+per*shape.rows; p++ {
			want[p] = 1
			switch {
			case p <= sharedParams:
				want[p] = shape.rows
			case shape.keyed && (p-sharedParams)%per == 0:
				want[p] = 2 // the key, in NULLIF and in the CASE
			}
		}
		require.Equal(t, want, seen, "%+v: every parameter used, the event's once per row, each row's once", shape)
	}
}

func TestInsertStatementIsBuiltOncePerShape(t *testing.T) {
	t.Parallel()
	q, err := New("s")
	require.NoError(t, err)

	const callers = 8
	got := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = q.insertStatement(insertShape{rows: 5})
		}()
	}
	wg.Wait()
	cached, ok := q.inserts.Load(insertShape{rows: 5})
	require.True(t, ok)
	for _, sql := range got {
		require.Equal(t, unsafe.StringData(cached.(string)), unsafe.StringData(sql), "every caller gets the cached text")
	}
	require.Equal(t, unsafe.StringData(got[0]), unsafe.StringData(q.insertStatement(insertShape{rows: 5})))
	_, ok = q.inserts.Load(insertShape{rows: 6})
	require.False(t, ok, "only the shapes asked for are built")
	_, ok = q.inserts.Load(insertShape{rows: 5, keyed: true})
	require.False(t, ok, "keyed rows have a shape of their own")
}

func TestInsertWritesOneRowPerTarget(t *testing.T) {
	t.Parallel()

	t.Run("WithoutKeys", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)

		cause := ulid.Make()
		at := time.Now().Add(time.Hour).Truncate(time.Microsecond)
		e := event("order.placed")
		e.CausationID, e.Depth, e.ProcessAt = (*[16]byte)(&cause), 2, &at
		e.Headers = map[string]string{"traceparent": "00-abc-def-01"}
		targets := []Target{target("email"), target("analytics"), target("warehouse")}
		targets[1].Queue, targets[1].MaxRetry, targets[1].TimeoutMS = "low", 3, 1500
		tx := b.begin(t)
		want := b.write(t, q, tx, e, targets)
		require.NoError(t, tx.Commit(t.Context()))
		other := b.insert(t, q, "invoice.issued", "record")

		require.NotZero(t, want[0].XID)
		require.Greater(t, other[0].XID, want[0].XID, "each row carries its sending transaction's ID")
		requireRowsEqual(t, append(want, other...), b.live(t))
		require.Equal(t, Counts{Live: 4}, b.count(t, q))
		for _, r := range want {
			require.Equal(t, rowState{}, b.state(t, r.Ref()), "a fresh row waits for nothing and was never enqueued")
		}
	})

	t.Run("EmptyHeadersAreStoredAsNull", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		e := event("order.placed")
		e.Headers = map[string]string{}
		require.NoError(t, q.Insert(t.Context(), b.pool, e, []Target{target("email")}))
		var null bool
		require.NoError(t, b.pool.QueryRow(t.Context(), b.sql(`SELECT headers IS NULL FROM {{schema}}.outbox`)).Scan(&null))
		require.True(t, null)
	})

	t.Run("KeyedRowsAreNumberedInOrder", func(t *testing.T) {
		t.Parallel()
		q, b := setup(t)
		e := event("order.placed")
		targets := []Target{target("email"), target("ledger"), target("analytics")}
		targets[0].OrderingKey, targets[1].OrderingKey = "customer-1", "customer-1"
		tx := b.begin(t)
		want := b.write(t, q, tx, e, targets)
		require.NoError(t, tx.Commit(t.Context()))

		requireRowsEqual(t, want, b.live(t))
		require.NotNil(t, want[0].OrderingSeq)
		require.NotNil(t, want[1].OrderingSeq)
		require.Less(t, *want[0].OrderingSeq, *want[1].OrderingSeq)
		require.Nil(t, want[2].OrderingKey, "a target without a key in a keyed event")
		require.Nil(t, want[2].OrderingSeq, "takes no number")
	})
}
