package relay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/dj-signals/signals/internal/store"
)

// The Dispatchers' position over the rows without an ordering key
// (store.Position) lives in Redis, beside the tasks it accounts for, in the
// marker's hash slot. Whatever makes Redis lose tasks takes the position
// with them: a Redis that lost its data has none, and the relays start
// over, sending every live row again (asynq turns away the tasks it still
// holds, by task ID); a replica promoted before it got the latest writes
// holds an older position, from before the tasks it lacks, and the relays
// go on from there. So the happy path writes nothing per row in PostgreSQL.
//
// One relay at a time moves the position: a batch takes a short lock, reads
// the position, enqueues the rows past it, and sets the new position only if
// the old one is still there (a relay whose lock ran out, or a Redis that
// lost its data meanwhile, finds it changed and records nothing). A relay
// whose batch found rows keeps the lock for its next batch; one that found
// none gives it back, and any relay may take the next batch: no leader, and
// a dead relay's lock runs out within lockTTL.

// lockTTL bounds how long a relay that died mid-batch holds the position.
// A batch that outlasts it is safe: the position moves only from where it
// was read.
const lockTTL = 5 * time.Second

// positionKeys are the Redis keys of a ledger's position and its lock.
type positionKeys struct{ position, lock string }

func newPositionKeys(markerKey string) positionKeys {
	tag := "{" + markerKey + "}"
	return positionKeys{position: tag + ":position", lock: tag + ":lock"}
}

// encodePosition writes p as "covered|upto|xid|id".
func encodePosition(p store.Position) string {
	return p.Covered + "|" + p.Upto + "|" + strconv.FormatUint(p.After.XID, 10) + "|" + hex.EncodeToString(p.After.ID[:])
}

// decodePosition reads what encodePosition wrote; "" is Start.
func decodePosition(s string) (store.Position, error) {
	if s == "" {
		return store.Start, nil
	}
	parts := strings.Split(s, "|")
	if len(parts) != 4 {
		return store.Position{}, fmt.Errorf("position %q: want covered|upto|xid|id", s)
	}
	p := store.Position{Covered: parts[0], Upto: parts[1]}
	var err error
	if p.After.XID, err = strconv.ParseUint(parts[2], 10, 64); err != nil {
		return store.Position{}, fmt.Errorf("position %q: %w", s, err)
	}
	if n, err := hex.Decode(p.After.ID[:], []byte(parts[3])); err != nil || n != len(p.After.ID) {
		return store.Position{}, fmt.Errorf("position %q: bad row ID", s)
	}
	return p, nil
}

// snapshotXmin reads the xmin of a pg_snapshot's text form, "xmin:xmax:xips":
// every transaction below it is visible in the snapshot.
func snapshotXmin(snapshot string) uint64 {
	xmin, _, _ := strings.Cut(snapshot, ":")
	v, _ := strconv.ParseUint(xmin, 10, 64)
	return v
}

// snapshotXmax reads the xmax of a pg_snapshot's text form: no transaction
// from it on is visible in the snapshot.
func snapshotXmax(snapshot string) uint64 {
	_, rest, _ := strings.Cut(snapshot, ":")
	xmax, _, _ := strings.Cut(rest, ":")
	v, _ := strconv.ParseUint(xmax, 10, 64)
	return v
}

// held is a position a relay took the lock of.
type held struct {
	raw   string // as read: what must still be there to move it
	pos   store.Position
	token string    // the lock's value, this relay's own
	until time.Time // when the relay stops counting on a kept lock
}

// errPositionBusy says another relay holds the position: it is relaying.
var errPositionBusy = errors.New("another relay is moving the position")

// takePosition locks the position for one batch and reads it, in one round
// trip, or returns errPositionBusy. A relay that kept the lock from its last
// batch, which found rows, goes on from the position it set, with no round
// trip: while rows keep coming, one relay moves the position batch after
// batch.
func (r *Relay) takePosition(ctx context.Context) (held, error) {
	if r.kept != nil && time.Now().Before(r.kept.until) {
		return *r.kept, nil
	}
	r.kept = nil
	h := held{token: ulid.Make().String()}
	var locked *redis.BoolCmd
	var read *redis.StringCmd
	_, err := r.redis.Pipelined(ctx, func(p redis.Pipeliner) error {
		locked = p.SetNX(ctx, r.keys.lock, h.token, lockTTL)
		read = p.Get(ctx, r.keys.position)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return held{}, fmt.Errorf("read the position in redis: %w", err)
	}
	if !locked.Val() {
		return held{}, errPositionBusy
	}
	h.raw = read.Val()
	if h.pos, err = decodePosition(h.raw); err != nil {
		// Not ours to read, or from another version: starting over sends
		// every live row again, which loses nothing.
		r.cfg.Logger.Warn("signals: the position in redis cannot be read; starting over from the first live row", "error", err)
		h.pos = store.Start
	}
	return h, nil
}

// movePosition sets the held position to next if it is still as read, and
// keeps the lock for the next batch or releases it, in one round trip; it
// reports whether it moved, the ledger's clock, advanced after the batch's
// enqueues (rewind.go), and whether the lock is kept.
var movePosition = redis.NewScript(`
local moved = 0
if (redis.call('GET', KEYS[1]) or '') == ARGV[1] then
  if ARGV[2] ~= ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) end
  moved = 1
end
local kept = 0
if redis.call('GET', KEYS[2]) == ARGV[3] then
  if moved == 1 and ARGV[4] == '1' then
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
    kept = 1
  else
    redis.call('DEL', KEYS[2])
  end
end
return {moved, redis.call('INCR', KEYS[3]), kept}
`)

// putPosition moves the held position to next, and keeps the lock for the
// relay's next batch if keep, or releases it. It reports false when the
// position was no longer as read: Redis lost its data or went back in
// time, or the lock ran out and another relay moved it; this batch's rows
// go out again from wherever the position is now.
func (r *Relay) putPosition(ctx context.Context, h held, next store.Position, keep bool) (bool, error) {
	r.kept = nil
	raw := h.raw
	if next != h.pos {
		raw = encodePosition(next)
	}
	keepArg := "0"
	if keep {
		keepArg = "1"
	}
	res, err := movePosition.Run(ctx, r.redis, []string{r.keys.position, r.keys.lock, r.clockKey()},
		h.raw, raw, h.token, keepArg, lockTTL.Milliseconds()).Int64Slice()
	if err != nil {
		return false, fmt.Errorf("move the position in redis: %w", err)
	}
	now := time.Now()
	if r.observeClock(res[1], now) {
		return false, errRedisWentBack
	}
	if res[2] == 1 {
		// Counted from before the call: the lock outlives this by far.
		r.kept = &held{raw: raw, pos: next, token: h.token, until: now.Add(lockTTL / 2)}
	}
	return res[0] == 1, nil
}

// releasePosition gives the lock back without moving the position, for a
// batch that failed, and when the relay stops.
func (r *Relay) releasePosition(h held) {
	r.kept = nil
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = releaseLock.Run(ctx, r.redis, []string{r.keys.lock}, h.token).Err() // it runs out anyway
}

var releaseLock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// ReadPosition returns the position of the ledger named ledgerID, for
// Stats: Start when Redis holds none.
func ReadPosition(ctx context.Context, rc redis.UniversalClient, ledgerID [16]byte) (store.Position, error) {
	raw, err := rc.Get(ctx, newPositionKeys(newMarker(rc, ledgerID).key).position).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return store.Start, fmt.Errorf("read the position in redis: %w", err)
	}
	p, err := decodePosition(raw)
	if err != nil {
		return store.Start, nil
	}
	return p, nil
}
