// Package agent is the slot agent: a small server that runs inside a
// long-lived slot container and fork/execs module programs in it on the
// pilot's behalf, so the container start cost is paid once per slot rather
// than once per task.
//
// The pilot bind-mounts its own static binary into the container and starts
// it there as the entrypoint, `scalebox slot-agent --socket DIR/agent.sock`,
// with DIR bind-mounted from the host. That command runs [Main]: it listens
// on the unix socket, prints one ready line on stdout, serves requests with
// [executor.Host] until its context ends or its stdin reaches EOF, and
// removes the socket. On the host the pilot reads the ready line with
// [ReadReady] and then runs programs through a [Client], which implements
// [executor.Runtime]: to the rest of the pilot a task run through the agent
// looks exactly like one run by [executor.Host].
//
// # Protocol
//
// The ready line is "scalebox-slot-agent ready <version>\n", <version>
// being [ProtocolVersion].
//
// Each connection to the socket carries exactly one run:
//
//  1. The client sends one JSON [Request] (a trailing newline is allowed)
//     and keeps its write side open. Requests are capped at
//     [MaxRequestBytes].
//  2. The agent runs the program. If the client half-closes its write side
//     or closes the connection (the agent sees EOF or an error when reading
//     past the request), the run is cancelled: the program's process group
//     is killed as on a timeout. This is how a client cancels.
//  3. The agent writes one JSON [Response] and closes the connection. A
//     cancelled run still gets its Response, holding the killed program's
//     Result and the cancellation error.
//
// Both messages carry the protocol version in their "version" field; an
// agent answers a request of another version with an error Response, and a
// client refuses a Response of another version, so a pilot and an agent
// binary that do not match fail with a clear error. Bump [ProtocolVersion]
// on any incompatible change to the messages or to the exchange.
//
// Runs are concurrent, one goroutine per connection. Bad input (not JSON,
// too large, empty argv, wrong version) gets an error Response; a panic
// while serving a connection is recovered and reported the same way.
//
// # Process reaping
//
// When the container engine gives the container its own PID namespace
// (podman and docker always, apptainer with --pid or --containall) and the
// agent is the entrypoint, the agent is PID 1 and inherits every orphaned
// grandchild of the programs it runs. The agent reaps only the programs it
// started (a wider reaper would steal their exit statuses), so such
// containers should be started with the engine's init (podman/docker
// --init) to reap the orphans.
package agent
