package main

// The minimum ledger: the least a database ledger in front of asynq can
// write, as the cost scenario's reference. The sender inserts one row in its
// business transaction; a relay reads the rows past a position it keeps in
// memory and enqueues each with the row's ID as the asynq TaskID, writing
// nothing per row; once a receiver has run, an acker deletes its row in a
// batch. Two writes per event: the INSERT and the DELETE.

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/oklog/ulid/v2"
)

const (
	minLedgerBatch       = 500                    // rows per relay read
	minLedgerConcurrency = 16                     // enqueues in flight
	minLedgerPoll        = 100 * time.Millisecond // idle relay, without a sender's hint
	minLedgerAckEvery    = 5 * time.Millisecond
)

// minLedger is the minimum ledger on one fixture's schema and queue.
type minLedger struct {
	f                         *fixture
	create, insert, read, ack string // SQL
	truncateSQL, remainingSQL string
	ids                       *openIDs
	wake                      chan struct{} // a sender committed

	mu    sync.Mutex // guards acked
	acked [][16]byte // receivers done, rows not deleted yet
}

func newMinLedger(f *fixture) *minLedger {
	t := pgx.Identifier{f.schema, "min_outbox"}.Sanitize()
	return &minLedger{
		f: f,
		create: `CREATE TABLE ` + t + ` (id uuid PRIMARY KEY, event_id uuid NOT NULL, signal text NOT NULL,
    receiver text NOT NULL, queue text NOT NULL, payload bytea NOT NULL)`,
		insert:       `INSERT INTO ` + t + ` (id, event_id, signal, receiver, queue, payload) VALUES ($1, $2, $3, $4, $5, $6)`,
		read:         `SELECT id, queue, payload FROM ` + t + ` WHERE id > $1 ORDER BY id LIMIT ` + fmt.Sprint(minLedgerBatch),
		ack:          `DELETE FROM ` + t + ` WHERE id = ANY($1)`,
		truncateSQL:  `TRUNCATE ` + t,
		remainingSQL: `SELECT EXISTS (SELECT FROM ` + t + `)`,
		ids:          newOpenIDs(),
		wake:         make(chan struct{}, 1),
	}
}

// setup creates the ledger's table.
func (m *minLedger) setup(ctx context.Context) error {
	if _, err := m.f.env.admin.Exec(ctx, m.create); err != nil {
		return fmt.Errorf("create min_outbox: %w", err)
	}
	return nil
}

// truncate empties the ledger between runs.
func (m *minLedger) truncate(ctx context.Context) error {
	if _, err := m.f.env.admin.Exec(ctx, m.truncateSQL); err != nil {
		return fmt.Errorf("truncate min_outbox: %w", err)
	}
	return nil
}

// empty reports whether every row has been deleted.
func (m *minLedger) empty(ctx context.Context, db *pgxpool.Pool) (bool, error) {
	var left bool
	err := db.QueryRow(ctx, m.remainingSQL).Scan(&left)
	return !left, err
}

// system is the ledger as one of the cost scenario's systems. The relay and
// the acker share a pool of pgxpool's default size; the asynq server has
// the same settings as plain asynq's.
func (m *minLedger) system(name string) system {
	f := m.f
	return system{
		name: name,
		start: func(ctx context.Context) (func(), error) {
			pool, err := pgxpool.New(ctx, f.env.dbURL)
			if err != nil {
				return nil, err
			}
			srv := f.newAsynqServer()
			if err := srv.Start(asynq.HandlerFunc(m.handle)); err != nil {
				pool.Close()
				return nil, err
			}
			client := asynq.NewClientFromRedisClient(f.env.rdb)
			stopLoops := runAll(ctx,
				func(ctx context.Context) error { return m.relay(ctx, pool, client) },
				func(ctx context.Context) error { return m.acker(ctx, pool) })
			return func() {
				srv.Shutdown()
				stopLoops()
				pool.Close()
			}, nil
		},
		send: func(ctx context.Context, pool *pgxpool.Pool, seq int64, committed func()) error {
			var id ulid.ULID
			err := f.placeOrder(ctx, pool, seq, func(ctx context.Context, tx pgx.Tx, o order) error {
				body, _ := json.Marshal(o)
				id = m.ids.open()
				_, err := tx.Exec(ctx, m.insert, [16]byte(id), [16]byte(ulid.Make()), f.one.Name(), "noop", f.queue, body)
				return err
			})
			m.ids.close(id)
			select {
			case m.wake <- struct{}{}:
			default:
			}
			if err == nil {
				committed()
			}
			return err
		},
	}
}

// relay enqueues every row, reading past the highest ID below which every
// sender's transaction has ended: IDs are handed out in order, but
// transactions commit out of order, so a row past that bound may still be
// followed by a smaller one. Rows past it are enqueued at once and re-read,
// not re-enqueued, until the bound passes them. The bound is known here
// because the senders run in this process, at no database cost: a lower
// bound on what any relay pays for the same guarantee.
func (m *minLedger) relay(ctx context.Context, pool *pgxpool.Pool, client *asynq.Client) error {
	var pos [16]byte
	pending := map[[16]byte]bool{} // past the bound and enqueued
	type row struct {
		id      [16]byte
		queue   string
		payload []byte
	}
	for ctx.Err() == nil {
		final := m.ids.settled()
		rows, err := pool.Query(ctx, m.read, pos)
		if err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("read min_outbox: %w", err))
		}
		var batch, fresh []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.id, &r.queue, &r.payload); err != nil {
				rows.Close()
				return err
			}
			batch = append(batch, r)
		}
		if err := rows.Err(); err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("read min_outbox: %w", err))
		}
		for _, r := range batch {
			if !pending[r.id] {
				fresh = append(fresh, r)
			}
		}
		var next atomic.Int64
		err = parallel(min(minLedgerConcurrency, len(fresh)), func(int) error {
			for i := next.Add(1) - 1; i < int64(len(fresh)); i = next.Add(1) - 1 {
				r := fresh[i]
				task := asynq.NewTask("bench:min_order", r.payload)
				_, err := client.EnqueueContext(ctx, task, asynq.TaskID(ulid.ULID(r.id).String()), asynq.Queue(r.queue))
				if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
					return fmt.Errorf("enqueue: %w", err)
				}
			}
			return nil
		})
		if err != nil {
			return ignoreCanceled(ctx, err)
		}
		moved, settled := false, true
		for _, r := range batch {
			if settled = settled && final(ulid.ULID(r.id)); settled {
				pos, moved = r.id, true
			} else {
				pending[r.id] = true
			}
		}
		if moved {
			for id := range pending {
				if ulid.ULID(id).Compare(pos) <= 0 {
					delete(pending, id)
				}
			}
		}
		if len(fresh) > 0 || moved && len(batch) == minLedgerBatch {
			continue
		}
		select {
		case <-ctx.Done():
		case <-m.wake:
		case <-time.After(minLedgerPoll):
		}
	}
	return nil
}

// handle is the no-op receiver: it reports to the tracker and hands the
// row's ID to the acker.
func (m *minLedger) handle(ctx context.Context, t *asynq.Task) error {
	var o order
	if err := json.Unmarshal(t.Payload(), &o); err != nil {
		return err
	}
	m.f.track.Load().started(o.Seq)
	taskID, _ := asynq.GetTaskID(ctx)
	id, err := ulid.Parse(taskID)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.acked = append(m.acked, [16]byte(id))
	m.mu.Unlock()
	return nil
}

// acker deletes the rows of the receivers that ran, every
// minLedgerAckEvery.
func (m *minLedger) acker(ctx context.Context, pool *pgxpool.Pool) error {
	tick := time.NewTicker(minLedgerAckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		m.mu.Lock()
		ids := m.acked
		m.acked = nil
		m.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		if _, err := pool.Exec(ctx, m.ack, ids); err != nil {
			return ignoreCanceled(ctx, fmt.Errorf("delete acked rows: %w", err))
		}
	}
}

// ignoreCanceled is nil once ctx is done: a loop stopped mid-statement.
func ignoreCanceled(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// openIDs hands out row IDs in increasing order and keeps those whose
// transactions have not ended yet.
type openIDs struct {
	mu       sync.Mutex
	entropy  *ulid.MonotonicEntropy
	last     ulid.ULID
	inFlight map[ulid.ULID]bool
}

func newOpenIDs() *openIDs {
	return &openIDs{entropy: ulid.Monotonic(rand.Reader, 0), inFlight: map[ulid.ULID]bool{}}
}

// open returns a new ID, greater than every ID before it, and holds it open
// until close.
func (o *openIDs) open() ulid.ULID {
	o.mu.Lock()
	defer o.mu.Unlock()
	// The clock may step back; the IDs must not.
	o.last = ulid.MustNew(max(ulid.Now(), o.last.Time()), o.entropy)
	o.inFlight[o.last] = true
	return o.last
}

// close ends id's transaction, committed or not; the zero ID is ignored.
func (o *openIDs) close(id ulid.ULID) {
	o.mu.Lock()
	delete(o.inFlight, id)
	o.mu.Unlock()
}

// settled returns a func that tells whether a row's transaction had ended
// at the time of the call: its ID is below every open one and not above
// the last handed out, as every later ID is greater. A row whose
// transaction had ended is visible to a snapshot taken afterwards, or
// never will be.
func (o *openIDs) settled() func(ulid.ULID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	bound, inclusive := o.last, true
	for id := range o.inFlight {
		if id.Compare(bound) < 0 || inclusive {
			bound, inclusive = id, false
		}
	}
	return func(id ulid.ULID) bool {
		c := id.Compare(bound)
		return c < 0 || c == 0 && inclusive
	}
}
