import KeywardBlockingIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A moto server on loopback (the real implementation of AWS's KMS and S3 APIs the AWS tests run
/// against), stopped (SIGKILL, reaped) when released. `scripts/test` installs `moto[server]`.
public final class MotoPeer: @unchecked Sendable {
    public let port: Int
    public var url: String { "http://127.0.0.1:\(port)" }
    private let pid: pid_t

    /// Starts `moto_server` on a free port and waits until it listens, blocking its thread (moto
    /// takes seconds to start: call it through ``BlockingIO/run(_:)``).
    public init() throws {
        port = Loopback.freePort()
        do { pid = try Spawn.quiet(["moto_server", "-H", "127.0.0.1", "-p", "\(port)"]) } catch {
            throw PeerError("cannot start moto_server (scripts/test installs moto[server]): \(error)")
        }
        guard Loopback.waitForPort(port, attempts: 300, every: 100_000) else {
            Spawn.stop(pid)
            throw PeerError("moto_server did not listen on \(port)")
        }
    }

    deinit { Spawn.stop(pid) }
}
