// Package testenv gives this repository's tests the PostgreSQL and Redis they
// run against, and the means to stay out of each other's way and to break
// those servers on purpose:
//
//   - [Pool] and [Schema]: a connection to the test database and a schema of
//     the test's own, dropped when the test ends.
//   - [Queue]: an asynq queue of the test's own, whose keys are deleted when
//     the test ends.
//   - [StartRedis] (and [StartRedisWith], for a config): a redis-server of
//     the test's own, to stop and restart for an outage.
//   - [StartSentinels]: a primary, a replica and three sentinels, to fail
//     over by killing the primary, with [Sentinels.CutReplication] to let
//     the replica fall behind first.
//   - [StartCluster]: a Redis Cluster of three primaries.
//   - [StartProxy]: a TCP proxy that cuts or refuses connections, for a
//     network failure.
//   - [StartPgBouncer]: a PgBouncer of the test's own in transaction
//     pooling mode, in front of the test database.
//   - [Eventually]: waits for a condition by polling instead of sleeping.
//   - [Run]: runs a Dispatcher's or a Worker's Run until the test ends,
//     and requires that it then returns nil.
//
// Tests share one database and one Redis server, so every schema and queue
// name is unique and every helper cleans up after itself: tests using them
// may run in parallel, and in several test processes at once.
package testenv
