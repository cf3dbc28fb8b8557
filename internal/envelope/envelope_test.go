package envelope

import (
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"
)

func TestHeadersRoundTrip(t *testing.T) {
	for _, m := range []Meta{
		{Signal: "order.placed", Receiver: "email", XID: 1, TaskID: ulid.Make(), EventID: ulid.Make(), CorrelationID: ulid.Make(), Timeout: 1500 * time.Millisecond},
		{Schema: "tenant_a", Signal: "a.b.c", Receiver: "x-y.z", XID: 1 << 40, EnqueuedAt: time.UnixMilli(1_800_000_000_123), TaskID: ulid.Make(), EventID: ulid.Make(), CorrelationID: ulid.Make(), CausationID: ulid.Make(), Depth: 3, Timeout: time.Hour, OrderingKey: "customer 42"},
	} {
		got, err := Decode(TaskType(m.Signal, m.Receiver), Headers(m))
		require.NoError(t, err)
		require.Equal(t, m, got)
	}
}

func TestATaskWithoutItsTransactionsIDIsALegacyRow(t *testing.T) {
	h := Headers(Meta{TaskID: ulid.Make(), EventID: ulid.Make(), CorrelationID: ulid.Make(), Timeout: time.Second})
	require.NotContains(t, h, headerXID)
	m, err := Decode("signals:s:r", h)
	require.NoError(t, err)
	require.Equal(t, uint64(legacyXID), m.XID, "rows from before migration 6 have xid 1")
}

func TestDecodeRejectsMalformedTasks(t *testing.T) {
	good := Headers(Meta{TaskID: ulid.Make(), EventID: ulid.Make(), CorrelationID: ulid.Make(), Timeout: time.Second})
	with := func(k, v string) map[string]string {
		h := map[string]string{}
		for kk, vv := range good {
			h[kk] = vv
		}
		if v == "" {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	cases := []struct {
		name, taskType string
		headers        map[string]string
	}{
		{"foreign type", "email:send", good},
		{"no receiver", "signals:order.placed", good},
		{"empty signal", "signals::r", good},
		{"no task id", "signals:s:r", with(headerTaskID, "")},
		{"no event id", "signals:s:r", with(headerEventID, "")},
		{"bad event id", "signals:s:r", with(headerEventID, "nope")},
		{"bad correlation", "signals:s:r", with(headerCorrelationID, "nope")},
		{"bad causation", "signals:s:r", with(headerCausationID, "nope")},
		{"negative depth", "signals:s:r", with(headerDepth, "-1")},
		{"zero timeout", "signals:s:r", with(headerTimeout, "0")},
		{"no timeout", "signals:s:r", with(headerTimeout, "")},
		{"bad xid", "signals:s:r", with(headerXID, "x")},
		{"zero xid", "signals:s:r", with(headerXID, "0")},
		{"bad enqueue time", "signals:s:r", with(headerEnqueuedAt, "soon")},
	}
	for _, c := range cases {
		_, err := Decode(c.taskType, c.headers)
		require.ErrorIs(t, err, ErrMalformed, c.name)
	}
}

func TestNames(t *testing.T) {
	cases := []struct {
		validate func(string) error
		name     string
		ok       bool
	}{
		{ValidateSignal, "order.placed", true},
		{ValidateSignal, "user_signed_up", true},
		{ValidateSignal, "a.b2.c_d", true},
		{ValidateSignal, "Order", false},
		{ValidateSignal, "order-placed", false},
		{ValidateSignal, "order.", false},
		{ValidateSignal, "a:b", false},
		{ValidateReceiver, "email-receipt", true},
		{ValidateReceiver, "billing.invoice_v2", true},
		{ValidateReceiver, "Email", false},
		{ValidateReceiver, "a:b", false},
		{ValidateReceiver, "_x", false},
		{ValidateQueue, "signals", true},
		{ValidateQueue, "Critical-1.high", true},
		{ValidateQueue, "has space", false},
		{ValidateQueue, "{braces}", false},
		{ValidateQueue, "", false},
		{ValidateSchema, "signals", true},
		{ValidateSchema, "_private", true},
		{ValidateSchema, "t_01jd3x", true},
		{ValidateSchema, strings.Repeat("x", 63), true},
		{ValidateSchema, "", false},
		{ValidateSchema, strings.Repeat("x", 64), false},
		{ValidateSchema, "1x", false},
		{ValidateSchema, "Signals", false},
		{ValidateSchema, "has space", false},
		{ValidateSchema, "has-dash", false},
		{ValidateSchema, `x"; DROP SCHEMA public; --`, false},
		{ValidateSchema, "schéma", false},
	}
	for _, c := range cases {
		err := c.validate(c.name)
		if c.ok {
			require.NoError(t, err, c.name)
		} else {
			require.ErrorIs(t, err, ErrInvalidName, c.name)
		}
	}
}
