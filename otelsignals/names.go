package otelsignals

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
)

// Span attributes. The messaging ones follow OpenTelemetry's semantic
// conventions for messaging (v1.39.0): the signal is the destination and
// each receiver a consumer group (every receiver gets its own copy of an
// event). The ledger's IDs, as a receiver sees them on signals.Event, are
// under "signals.", the task ID too: it is the message ID, one per event
// and receiver.
var (
	systemAttr    = semconv.MessagingSystemKey.String("dj-signals")
	destination   = semconv.MessagingDestinationNameKey
	consumerGroup = semconv.MessagingConsumerGroupNameKey

	opSend        = semconv.MessagingOperationName("send")
	opEnqueue     = semconv.MessagingOperationName("enqueue")
	opReceive     = semconv.MessagingOperationName("receive")
	opTypeCreate  = semconv.MessagingOperationTypeCreate
	opTypeSend    = semconv.MessagingOperationTypeSend
	opTypeProcess = semconv.MessagingOperationTypeProcess

	attrEventID       = attribute.Key("signals.event_id")
	attrTaskID        = attribute.Key("signals.task_id")
	attrCorrelationID = attribute.Key("signals.correlation_id")
	attrCausationID   = attribute.Key("signals.causation_id")
	attrDepth         = attribute.Key("signals.depth")
	attrReceivers     = attribute.Key("signals.receivers")
	attrQueue         = attribute.Key("signals.queue")
	attrAttempt       = attribute.Key("signals.attempt")
	attrDuplicate     = attribute.Key("signals.duplicate")
	attrDeadReason    = attribute.Key("signals.dead_reason")
)

// Instrument names.
const (
	metricSent          = "signals.sent"
	metricEnqueued      = "signals.enqueued"
	metricDuplicates    = "signals.enqueue.duplicates"
	metricResent        = "signals.enqueue.resent"
	metricEnqueueFailed = "signals.enqueue.failed"
	metricSucceeded     = "signals.receive.succeeded"
	metricFailed        = "signals.receive.failed"
	metricDead          = "signals.receive.dead"
	metricLag           = "signals.delivery.lag"
	metricDuration      = "signals.receive.duration"

	metricBacklog     = "signals.backlog"
	metricOldestAge   = "signals.backlog.oldest_age"
	metricDeadLetters = "signals.dead_letters"
	metricQueueTasks  = "signals.queue.tasks"
	metricQueueServed = "signals.queue.served"
)

// Metric attributes: short, since every time series carries them.
const (
	metricSignal   = attribute.Key("signal")
	metricReceiver = attribute.Key("receiver")
	metricQueue    = attribute.Key("queue")
	metricReason   = attribute.Key("reason")
	metricState    = attribute.Key("state")
)

// Histogram buckets, in seconds. The lag reaches an hour, for a backlog
// that waited out an outage; a receiver run is bounded by its Timeout, a
// minute by default.
var (
	lagBuckets      = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	durationBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
)
