package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"regexp"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// kind is what an enqueue's error says about whose fault it is.
type kind int

const (
	enqueued kind = iota // in Redis now, or already (a task ID conflict)
	rowError             // this row failed; the others may go through
	invalid              // this row can never be enqueued
	outage               // Redis is unreachable or refusing all work
	untried              // not tried: Redis was found down
)

// serverState matches the Redis error replies that describe the server, not
// the command: out of memory under noeviction, loading its data set, a
// read-only replica, a failover under way, a long script running. asynq
// returns its script errors as plain strings ("redis eval error: OOM
// command not allowed ..."), so the reply is found in the message, not by
// type.
var serverState = regexp.MustCompile(`\b(OOM|LOADING|READONLY|MASTERDOWN|BUSY|NOREPLICAS|CLUSTERDOWN|TRYAGAIN)\b`)

// classify reads an enqueue's error. Anything that is neither a broken
// connection nor a reply about the server's state is the row's: a WRONGTYPE
// on one queue's key or an argument beyond proto-max-bulk-len fails that
// row alone, which then waits out its own backoff.
func classify(err error) kind {
	var netErr net.Error
	switch {
	case err == nil, errors.Is(err, asynq.ErrTaskIDConflict):
		return enqueued
	case errors.Is(err, errInvalidRow):
		return invalid
	case errors.As(err, &netErr), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, context.DeadlineExceeded), serverState.MatchString(err.Error()):
		return outage
	}
	return rowError
}
