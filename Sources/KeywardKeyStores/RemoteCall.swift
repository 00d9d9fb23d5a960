import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOSSL

/// How a call to a remote key store (AWS KMS, Vault Transit) is attempted: one deadline across all
/// attempts, and full-jitter back-off between attempts that failed for a reason worth retrying
/// (throttling, 5xx, a connection that failed).
struct RemoteCall: Sendable {
    /// The deadline of one call, retries included.
    var timeout: Duration
    /// Attempts after the first, for retryable failures.
    var maxRetries: Int
    /// Back-off before retry n is uniform in 0 ..< base × 2ⁿ (capped at 2 s).
    var backoffBase: Duration

    /// What one attempt throws: the error to report, and whether another attempt may succeed.
    struct Failure: Error {
        var error: KeyStoreError
        var retryable: Bool
    }

    /// Runs `attempt` (given the time left) until it returns, throws something other than a
    /// retryable ``Failure``, retries run out, or the deadline passes (`keyUnavailable`, `late`).
    func run<T>(late: @autoclosure () -> String, _ attempt: (Duration) async throws -> T) async throws -> T {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var retries = 0
        while true {
            let remaining = deadline - clock.now
            guard remaining > .zero else { throw KeyStoreError(.keyUnavailable, late()) }
            do {
                return try await attempt(remaining)
            } catch let failure as Failure {
                retries += 1
                guard failure.retryable, retries <= maxRetries else { throw failure.error }
                let cap = min(backoffBase * (1 << (retries - 1)), .seconds(2))
                let pause = Duration.nanoseconds(Int64.random(in: 0...max(cap.nanoseconds, 1)))
                guard clock.now + pause < deadline else { throw failure.error }
                try await Task.sleep(for: pause)
            }
        }
    }
}

extension RemoteCall {
    /// Sends `request` and collects the answer (up to 1 MiB). Getting no answer at all (refused,
    /// reset, DNS, time-out) is a retryable `keyUnavailable` naming `store` and the kind of failure;
    /// a certificate that does not verify is not retried.
    static func send(_ request: HTTPClientRequest, with http: HTTPClient, timeout: Duration,
                     store: String) async throws -> (status: HTTPResponseStatus, body: [UInt8]) {
        do {
            let response = try await http.execute(request, timeout: .nanoseconds(timeout.nanoseconds))
            let data = try await response.body.collect(upTo: 1 << 20)
            return (response.status, Array(data.readableBytesView))
        } catch {
            let kind = (error as? HTTPClientError).map { "\($0)" } ?? String(describing: type(of: error))
            throw Failure(error: KeyStoreError(.keyUnavailable, "\(store) at \(request.url) is unreachable (\(kind))"),
                          retryable: !(error is NIOSSLError || error is NIOSSLExtraError))
        }
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (s, atto) = components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }
}
