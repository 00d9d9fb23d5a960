import Foundation
import KeywardCrypto
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// Where the KMIP server is and who Keyward is to it: mutual TLS (1.2 or later), the server's
/// certificate checked against a CA file, Keyward's own certificate and key presented.
public struct KMIPConfiguration: Sendable {
    public var host: String
    public var port: Int
    public var caFile: String
    public var certificateFile: String
    public var keyFile: String
    /// The deadline of one call, connecting included (`KEYWARD_KMIP_TIMEOUT_MS`, default 5000).
    public var timeout: Duration = .seconds(5)

    public init(host: String, port: Int, caFile: String, certificateFile: String, keyFile: String) {
        self.host = host
        self.port = port
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// `KEYWARD_KMIP_SERVER` (host:port, default port 5696), `KEYWARD_KMIP_CA`,
    /// `KEYWARD_KMIP_CERT`, `KEYWARD_KMIP_KEY`, `KEYWARD_KMIP_TIMEOUT_MS`.
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> KMIPConfiguration {
        func value(_ name: String) throws -> String {
            guard let v = env["KEYWARD_KMIP_\(name)"], !v.isEmpty else {
                throw KeyStoreError(.invalidArgument, "kmip: keys need KEYWARD_KMIP_SERVER, KEYWARD_KMIP_CA, KEYWARD_KMIP_CERT and KEYWARD_KMIP_KEY (KEYWARD_KMIP_\(name) is not set)")
            }
            return v
        }
        var timeout: Int?
        if let text = env["KEYWARD_KMIP_TIMEOUT_MS"] {
            guard let ms = Int(text) else { throw KeyStoreError(.invalidArgument, "KEYWARD_KMIP_TIMEOUT_MS must be 1 to 3600000 milliseconds") }
            timeout = ms
        }
        return try KMIPConfiguration(server: try value("SERVER"), caFile: try value("CA"), certificateFile: try value("CERT"),
                                     keyFile: try value("KEY"), timeoutMilliseconds: timeout)
    }

    /// From a server written `host`, `host:port`, `[IPv6]:port` or a bare IPv6 address, and a
    /// time-out of 1 ms to an hour: the variables' and the config file's one parser.
    public init(server: String, caFile: String, certificateFile: String, keyFile: String, timeoutMilliseconds: Int? = nil) throws {
        var host = server, port = 5696
        let malformed = KeyStoreError(.invalidArgument, "the KMIP server is host:port, [IPv6]:port or an address")
        if server.hasPrefix("["), let close = server.firstIndex(of: "]") {
            host = String(server[server.index(after: server.startIndex)..<close])
            let rest = server[server.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let p = Int(rest.dropFirst()), (1...65535).contains(p) else { throw malformed }
                port = p
            }
        } else if server.filter({ $0 == ":" }).count == 1, let colon = server.firstIndex(of: ":") {
            guard let p = Int(server[server.index(after: colon)...]), (1...65535).contains(p) else { throw malformed }
            host = String(server[..<colon])
            port = p
        }
        guard !host.isEmpty else { throw KeyStoreError(.invalidArgument, "the KMIP server names no host") }
        self.init(host: host, port: port, caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
        if let ms = timeoutMilliseconds {
            guard (1...3_600_000).contains(ms) else {
                throw KeyStoreError(.invalidArgument, "the KMIP time-out must be 1 to 3600000 milliseconds")
            }
            timeout = .milliseconds(ms)
        }
    }
}

/// A KMIP client: one request message with one batch item per call, over kept-alive TLS
/// connections (one per concurrent call, reused), answers checked and failures mapped to
/// ``KeyStoreError`` codes. Key material never appears in an error or a log.
public final class KMIPClient: Sendable {
    public let configuration: KMIPConfiguration
    private let tls: NIOSSLContext
    private let idle = Mutex<[any Channel]>([])

    /// The protocol version Keyward speaks: 1.4 (AES-GCM's additional data and tag came with 1.4).
    static let version = (major: Int32(1), minor: Int32(4))

    public init(configuration: KMIPConfiguration) throws {
        self.configuration = configuration
        var t = TLSConfiguration.makeClientConfiguration()
        t.minimumTLSVersion = .tlsv12
        // TLS 1.2 suites: AEAD with forward secrecy only. A server that prefers its own order
        // (PyKMIP's does) would otherwise pick a CBC suite.
        t.cipherSuites = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256"
        func read<T>(_ what: String, _ file: String, _ load: () throws -> T) throws -> T {
            do { return try load() } catch {
                throw KeyStoreError(.invalidArgument, "the KMIP \(what) file \(file) cannot be read as PEM")
            }
        }
        t.trustRoots = .certificates(try read("CA", configuration.caFile) { try NIOSSLCertificate.fromPEMFile(configuration.caFile) })
        t.certificateChain = try read("client certificate", configuration.certificateFile) {
            try NIOSSLCertificate.fromPEMFile(configuration.certificateFile).map { .certificate($0) }
        }
        t.privateKey = .privateKey(try read("client key", configuration.keyFile) { try NIOSSLPrivateKey(file: configuration.keyFile, format: .pem) })
        do { tls = try NIOSSLContext(configuration: t) } catch {
            throw KeyStoreError(.invalidArgument, "the KMIP client certificate and key do not make a TLS identity")
        }
    }

    deinit {
        for c in idle.withLock({ $0 }) { c.close(promise: nil) }
    }

    /// A failed operation as the server reported it.
    struct Failure: Error {
        var reason: UInt32?
        var message: String
    }

    /// Sends `operation` with `payload` and returns the response payload (an empty structure if
    /// the answer has none); a failed result is thrown as ``Failure``.
    func call(_ operation: KMIPOperation, _ payload: [TTLV]) async throws -> TTLV {
        let answer = try await exchange(Self.request(operation, payload).encoded, operation: operation)
        let message: TTLV
        do {
            message = try TTLV.decode(answer)
        } catch {
            throw KeyStoreError(.keyUnavailable, "the KMIP server answered \(operation.name) with \(error)")
        }
        return try Self.payload(of: message, operation)
    }

    /// A request message of one batch item.
    static func request(_ operation: KMIPOperation, _ payload: [TTLV]) -> TTLV {
        TTLV(KMIPTag.requestMessage, [
            TTLV(KMIPTag.requestHeader, [
                TTLV(KMIPTag.protocolVersion, [
                    TTLV(KMIPTag.protocolVersionMajor, .integer(Self.version.major)),
                    TTLV(KMIPTag.protocolVersionMinor, .integer(Self.version.minor)),
                ]),
                TTLV(KMIPTag.batchCount, .integer(1)),
            ]),
            TTLV(KMIPTag.batchItem, [
                TTLV(KMIPTag.operation, .enumeration(operation.rawValue)),
                TTLV(KMIPTag.requestPayload, payload),
            ]),
        ])
    }

    /// The response payload of a response message to `operation`; a failed result is thrown as ``Failure``.
    static func payload(of message: TTLV, _ operation: KMIPOperation) throws -> TTLV {
        guard message.tag == KMIPTag.responseMessage, let item = message[KMIPTag.batchItem],
              let status = item[KMIPTag.resultStatus]?.enumeration else {
            throw KeyStoreError(.keyUnavailable, "the KMIP server's answer to \(operation.name) is not a response message")
        }
        if let op = item[KMIPTag.operation]?.enumeration, op != operation.rawValue {
            throw KeyStoreError(.keyUnavailable, "the KMIP server answered \(operation.name) with another operation's response")
        }
        guard status == KMIPValue.success else {
            throw Failure(reason: item[KMIPTag.resultReason]?.enumeration, message: item[KMIPTag.resultMessage]?.text ?? "status \(status)")
        }
        return item[KMIPTag.responsePayload] ?? TTLV(KMIPTag.responsePayload, [])
    }

    /// Sends encoded request bytes and returns the answer's bytes, neither encoded nor checked
    /// here: the bare exchange, for benchmarks.
    package func roundTrip(_ request: [UInt8]) async throws -> [UInt8] {
        try await exchange(request, operation: .decrypt)
    }

    /// Idle connections kept for reuse, at most.
    static let maxIdle = 4

    /// One request and its answer, on a kept connection if there is one. A request that could not
    /// be written (the server closed the connection while it idled) goes on another; once written
    /// it is never sent again, since Create or Revoke must not happen twice.
    private func exchange(_ request: [UInt8], operation: KMIPOperation) async throws -> [UInt8] {
        let deadline = NIODeadline.now() + .nanoseconds(configuration.timeout.nanoseconds)
        while let kept = idle.withLock({ idle in
            while let c = idle.popLast() { if c.isActive { return c } }
            return nil
        }) {
            do {
                let answer = try await roundTrip(request, on: kept, deadline: deadline)
                keep(kept)
                return answer
            } catch is NotSent {
                kept.close(promise: nil)
            } catch {
                kept.close(promise: nil)
                throw Self.unreachable(error, configuration, operation)
            }
        }
        let channel = try await connect(deadline: deadline)
        do {
            let answer = try await roundTrip(request, on: channel, deadline: deadline)
            keep(channel)
            return answer
        } catch {
            channel.close(promise: nil)
            throw Self.unreachable(error, configuration, operation)
        }
    }

    private func keep(_ channel: any Channel) {
        let kept = idle.withLock { idle in
            guard idle.count < Self.maxIdle else { return false }
            idle.append(channel)
            return true
        }
        if !kept { channel.close(promise: nil) }
    }

    /// The request was not written (the connection was closed, or its TLS handshake failed).
    private struct NotSent: Error {
        var cause: any Error
    }

    private static func unreachable(_ error: any Error, _ c: KMIPConfiguration, _ operation: KMIPOperation) -> KeyStoreError {
        if let e = error as? KeyStoreError { return e }
        let error = (error as? NotSent)?.cause ?? error
        let kind = (error as? NIOSSLError).map { "TLS: \($0)" } ?? (error is NIOSSLExtraError ? "TLS: the certificate does not name the host" : nil)
            ?? (error as? KMIPTimeout).map { _ in "no answer in time" } ?? String(describing: type(of: error))
        return KeyStoreError(.keyUnavailable, "the KMIP server at \(c.host):\(c.port) is unreachable for \(operation.name) (\(kind))")
    }

    private struct KMIPTimeout: Error {}

    private func connect(deadline: NIODeadline) async throws -> any Channel {
        let c = configuration
        let tls = tls
        let serverHostname = (try? SocketAddress(ipAddress: c.host, port: 0)) == nil ? c.host : nil
        do {
            return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(max(deadline - .now(), .milliseconds(1)))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                        try sync.addHandler(ByteToMessageHandler(KMIPFrameDecoder()))
                        try sync.addHandler(KMIPExchangeHandler())
                    }
                }
                .connect(host: c.host, port: c.port).get()
        } catch {
            throw KeyStoreError(.keyUnavailable, "the KMIP server at \(c.host):\(c.port) is unreachable (\(String(describing: type(of: error))))")
        }
    }

    private func roundTrip(_ request: [UInt8], on channel: any Channel, deadline: NIODeadline) async throws -> [UInt8] {
        let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
        let timer = channel.eventLoop.scheduleTask(deadline: deadline) { promise.fail(KMIPTimeout()) }
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail(NotSent(cause: $0)) }
        channel.writeAndFlush(KMIPExchangeHandler.Request(bytes: ByteBuffer(bytes: request), answer: promise), promise: written)
        defer { timer.cancel() }
        var answer = try await promise.futureResult.get()
        return answer.readBytes(length: answer.readableBytes) ?? []
    }
}

/// Cuts the byte stream into whole TTLV items (the 8-byte header gives the length).
private struct KMIPFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    /// Answers Keyward asks for are small; anything larger is not one of them.
    static let maxFrame = 1 << 20

    struct TooLarge: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let header = buffer.getBytes(at: buffer.readerIndex, length: 8), let length = TTLV.frameLength(header: header) else {
            return .needMoreData
        }
        guard length <= Self.maxFrame else { throw TooLarge() }
        guard let frame = buffer.readSlice(length: length) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }
}

/// Pairs each written request with the next whole answer; fails what waits if the connection
/// errs or closes.
private final class KMIPExchangeHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Request
    typealias OutboundOut = ByteBuffer

    struct Request {
        var bytes: ByteBuffer
        var answer: EventLoopPromise<ByteBuffer>
    }

    private var waiting = CircularBuffer<EventLoopPromise<ByteBuffer>>()

    struct Closed: Error {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        waiting.append(request.answer)
        context.write(wrapOutboundOut(request.bytes), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !waiting.isEmpty else { return context.close(promise: nil) }  // an answer nobody asked for
        waiting.removeFirst().succeed(unwrapInboundIn(data))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(Closed())
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        while let p = waiting.popFirst() { p.fail(error) }
    }
}

extension KMIPClient.Failure {
    /// The failure as a key store's error: the server's reason (and, where PyKMIP gives only a
    /// generic one, its message) to our codes.
    func keyStoreError(_ operation: KMIPOperation) -> KeyStoreError {
        let text = "KMIP \(operation.name): \(message)"
        let lower = message.lowercased()
        // A key in the wrong state is refused with Permission Denied (PyKMIP) or Illegal Operation.
        if lower.contains("active state") || lower.contains("not active") || lower.contains("deactivated") {
            return KeyStoreError(.keyDisabled, text)
        }
        switch reason {
        case KMIPValue.reasonItemNotFound: return KeyStoreError(.keyNotFound, text)
        case KMIPValue.reasonPermissionDenied, KMIPValue.reasonAuthenticationNotSuccessful: return KeyStoreError(.accessDenied, text)
        case KMIPValue.reasonCryptographicFailure: return KeyStoreError(.invalidCiphertext, text)
        case KMIPValue.reasonObjectAlreadyExists: return KeyStoreError(.alreadyExists, text)
        // A wrong tag or additional data: PyKMIP says only "Operation failed" (General Failure).
        case KMIPValue.reasonGeneralFailure where operation == .decrypt: return KeyStoreError(.invalidCiphertext, text)
        case KMIPValue.reasonGeneralFailure: return KeyStoreError(.keyUnavailable, text)
        default: return KeyStoreError(.invalidArgument, text)
        }
    }
}
