import Foundation
import KeywardAudit
import KeywardStorage
import Logging
import NIOCore
import Synchronization

/// What the lease keeper of a running batch knows: why sending should stop, whether the lease is
/// lost, and until when it surely holds.
final class Watch: Sendable {
    private struct State {
        var reason: BatchRunner.Stop?
        var lost = false
        var finished = false
        var renewed: ContinuousClock.Instant
    }
    private let state: Mutex<State>
    let lease: Duration

    /// `lease`: its length; it was taken just before.
    init(lease: Duration) {
        self.lease = lease
        state = Mutex(State(renewed: .now))
    }

    /// Why sending should stop, if it should: a lost lease first.
    var reason: BatchRunner.Stop? { state.withLock { $0.lost ? .leaseLost : $0.reason } }
    var lost: Bool { state.withLock { $0.lost } }
    var finished: Bool { state.withLock { $0.finished } }
    /// Whether the lease holds for `margin` more, as far as this replica knows.
    func holds(for margin: Duration) -> Bool { state.withLock { !$0.lost && ContinuousClock.now + margin < $0.renewed + lease } }

    func stop(_ reason: BatchRunner.Stop) { state.withLock { if $0.reason == nil { $0.reason = reason } } }
    func lose() { state.withLock { $0.lost = true } }
    func renewed(at instant: ContinuousClock.Instant) { state.withLock { $0.renewed = max($0.renewed, instant) } }
    func finish() { state.withLock { $0.finished = true } }
}

/// A flag one task sets and others read.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}

/// A decrypted file's non-blank lines, with their line numbers (from 1).
final class FileLines: @unchecked Sendable {  // used by one task at a time
    private let reading: StreamingDecryption
    private let download: any BlobDownload
    private var splitter: JSONLines
    private var physical = 0
    private var ended = false

    init(reading: StreamingDecryption, download: any BlobDownload, limit: Int) {
        self.reading = reading
        self.download = download
        splitter = JSONLines(limit: limit)
    }

    func next() async throws -> (Int, [UInt8])? {
        while true {
            let line: [UInt8]
            do {
                if let l = try splitter.next() {
                    line = l
                } else if ended {
                    guard let last = splitter.finish() else { return nil }
                    line = last
                } else {
                    if let chunk = try await reading.next() { splitter.append(chunk.readableBytesView) } else { ended = true }
                    continue
                }
            } catch let e as BatchLineError {
                throw BatchRunner.Failure(code: e.code, message: e.message)
            }
            physical += 1
            if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { continue }
            return (physical, line)
        }
    }

    func close() { download.close() }
}
