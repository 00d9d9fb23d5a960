import AsyncHTTPClient
import Foundation
import KeywardCrypto
import NIOCore
import NIOHTTP1
import NIOSSL
import Synchronization

/// How Keyward signs in to Vault or OpenBao.
public enum VaultAuth: Sendable {
    /// A token given by the operator (`VAULT_TOKEN`, `BAO_TOKEN`), used as it is.
    case token(Secret)
    /// AppRole (`VAULT_ROLE_ID`, `VAULT_SECRET_ID`): Keyward logs in, and logs in again before the
    /// token's lease runs out (or at once if the server refuses the token).
    case appRole(roleID: String, secretID: Secret, mount: String)
}

/// Where the Vault or OpenBao server is and how to reach it; nothing here prints a credential.
public struct VaultConfiguration: Sendable {
    /// `https://vault.example:8200`, without a trailing slash (`VAULT_ADDR`, `BAO_ADDR`).
    public var address: String
    public var auth: VaultAuth
    /// Enterprise/OpenBao namespace, sent as `X-Vault-Namespace` (`VAULT_NAMESPACE`, `BAO_NAMESPACE`).
    public var namespace: String?
    /// A PEM file of the CAs the server's certificate must chain to (`VAULT_CACERT`, `BAO_CACERT`).
    public var caFile: String?
    /// The deadline of one call, retries included (`KEYWARD_VAULT_TIMEOUT_MS`, default 5000).
    public var timeout: Duration = .seconds(5)
    public var maxRetries = 3
    public var backoffBase: Duration = .milliseconds(50)

    public init(address: String, auth: VaultAuth, namespace: String? = nil, caFile: String? = nil) {
        self.address = address.hasSuffix("/") ? String(address.dropLast()) : address
        self.auth = auth
        self.namespace = namespace
        self.caFile = caFile
    }

    /// Reads the standard Vault variables (and OpenBao's `BAO_` names for them).
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> VaultConfiguration {
        func value(_ name: String) -> String? {
            (env["VAULT_\(name)"] ?? env["BAO_\(name)"]).flatMap { $0.isEmpty ? nil : $0 }
        }
        guard let address = value("ADDR") else {
            throw KeyStoreError(.invalidArgument, "vault-transit: keys need the server's address: VAULT_ADDR (or BAO_ADDR)")
        }
        guard address.hasPrefix("http://") || address.hasPrefix("https://") else {
            throw KeyStoreError(.invalidArgument, "VAULT_ADDR must start with http:// or https://")
        }
        let auth: VaultAuth
        if let roleID = value("ROLE_ID") {
            guard let secretID = value("SECRET_ID") else {
                throw KeyStoreError(.accessDenied, "VAULT_ROLE_ID is set but VAULT_SECRET_ID is not")
            }
            auth = .appRole(roleID: roleID, secretID: Secret(secretID), mount: env["KEYWARD_VAULT_APPROLE_MOUNT"] ?? "approle")
        } else if let token = value("TOKEN") {
            auth = .token(Secret(token))
        } else {
            throw KeyStoreError(.accessDenied, "no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID")
        }
        var c = VaultConfiguration(address: address, auth: auth, namespace: value("NAMESPACE"), caFile: value("CACERT"))
        if let text = env["KEYWARD_VAULT_TIMEOUT_MS"] {
            guard let ms = Int(text), (1...3_600_000).contains(ms) else {
                throw KeyStoreError(.invalidArgument, "KEYWARD_VAULT_TIMEOUT_MS must be 1 to 3600000 milliseconds")
            }
            c.timeout = .milliseconds(ms)
        }
        return c
    }
}

/// A small Vault HTTP API client: JSON over async-http-client's keep-alive pool, the token in
/// `X-Vault-Token` (never logged, never in an error), retries on 429, 5xx (sealed, standby) and
/// connection failures under one deadline, and Vault's `{"errors": [...]}` mapped to
/// ``KeyStoreError`` codes.
public final class VaultClient: Sendable {
    public let configuration: VaultConfiguration
    private let http: HTTPClient
    private let session = Mutex(Session())

    /// The token in use, when it was obtained and when to replace it (AppRole); one login at a
    /// time, whose outcome every caller that waited for it shares.
    private struct Session {
        var token: Secret?
        var obtained: ContinuousClock.Instant?
        var renewAt: ContinuousClock.Instant?
        /// Counts logins, so that a refusal of an older token does not discard a newer one.
        var generation = 0
        var loggingIn = false
        var waiting: [CheckedContinuation<(Secret, Int), any Error>] = []
    }

    public init(configuration: VaultConfiguration) throws {
        self.configuration = configuration
        http = try Self.client(trusting: configuration.caFile)
    }

    /// One client per CA file (or none) for the process's life (a client must be shut down before
    /// it is released, and key stores live as long as the process): TLS 1.2 or later, and no
    /// redirect followed, since a redirect would carry the token (or the AppRole secret) elsewhere.
    private static let clients = Mutex<[String: HTTPClient]>([:])

    private static func client(trusting caFile: String?) throws -> HTTPClient {
        try clients.withLock { clients in
            if let c = clients[caFile ?? ""] { return c }
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            if let caFile {
                do {
                    tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
                } catch {
                    throw KeyStoreError(.invalidArgument, "VAULT_CACERT \(caFile) holds no PEM certificate Keyward can read")
                }
            }
            var config = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow)
            config.connectionPool = .init(idleTimeout: .seconds(60))
            let c = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
            clients[caFile ?? ""] = c
            return c
        }
    }

    /// Calls `method path` (relative to `/v1/`) with a JSON body; returns the answer's `data`
    /// object, or nil for 204. One deadline bounds the whole call, a login included. A call that is
    /// not `idempotent` (creating or rotating a key) is sent once.
    func call<Body: Encodable, Answer: Decodable>(_ method: HTTPMethod, _ path: String, _ body: Body?, as: Answer.Type,
                                                  what: String, idempotent: Bool = true) async throws -> Answer? {
        let bytes = try body.map { Array(try JSONEncoder().encode($0)) }
        let deadline = ContinuousClock.now + configuration.timeout
        var reauthenticated = false
        while true {
            let (token, generation) = try await currentToken(deadline: deadline)
            do {
                guard let raw = try await send(method, path, bytes, token: token, deadline: deadline, retrying: idempotent, what: what) else {
                    return nil
                }
                do {
                    return try JSONDecoder().decode(Envelope<Answer>.self, from: Data(raw)).data
                } catch {
                    throw KeyStoreError(.keyUnavailable, "Vault answered \(what) with a body Keyward cannot read")
                }
            } catch let e as KeyStoreError where e.code == .accessDenied {
                // An AppRole token revoked or expired early: log in again, once, unless another
                // call did meanwhile or the token is fresh (then the refusal is the policy's).
                guard case .appRole = configuration.auth, !reauthenticated else { throw e }
                reauthenticated = true
                let retry = session.withLock { s in
                    guard s.generation == generation else { return true }
                    guard let obtained = s.obtained, ContinuousClock.now - obtained > Self.freshToken else { return false }
                    s.token = nil
                    return true
                }
                guard retry else { throw e }
            }
        }
    }

    /// A token younger than this that is refused is refused by policy, not for having expired.
    static let freshToken: Duration = .seconds(10)

    private struct Envelope<T: Decodable>: Decodable { var data: T }

    /// One request, with retries (if `retrying`) until `deadline`; the answer's body, nil for 204.
    private func send(_ method: HTTPMethod, _ path: String, _ body: [UInt8]?, token: Secret?, deadline: ContinuousClock.Instant,
                      retrying: Bool, what: String) async throws -> [UInt8]? {
        let call = RemoteCall(timeout: deadline - .now, maxRetries: retrying ? configuration.maxRetries : 0, backoffBase: configuration.backoffBase)
        return try await call.run(late: "Vault did not answer \(what) within \(configuration.timeout)") { remaining in
            try await attempt(method, path, body, token: token, timeout: remaining, what: what)
        }
    }

    private func attempt(_ method: HTTPMethod, _ path: String, _ body: [UInt8]?, token: Secret?, timeout: Duration,
                         what: String) async throws -> [UInt8]? {
        let url = "\(configuration.address)/v1/\(path)"
        var request = HTTPClientRequest(url: url)
        request.method = method
        if let token { request.headers.add(name: "X-Vault-Token", value: token.exposed()) }
        if let namespace = configuration.namespace { request.headers.add(name: "X-Vault-Namespace", value: namespace) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        let (status, answer) = try await RemoteCall.send(request, with: http, timeout: timeout, store: "Vault")
        switch status.code {
        case 200: return answer
        case 204: return nil
        default: throw Self.failure(status: status, body: answer, what: what)
        }
    }

    private struct Errors: Decodable { var errors: [String]? }

    /// Vault's statuses and messages to our codes. Vault's messages name keys, paths and versions,
    /// never key material or tokens.
    static func failure(status: HTTPResponseStatus, body: [UInt8], what: String) -> RemoteCall.Failure {
        let messages = (try? JSONDecoder().decode(Errors.self, from: Data(body)))?.errors ?? []
        let message = messages.isEmpty ? "HTTP \(status.code)" : messages.joined(separator: "; ")
        let reason = "Vault \(what): \(message)"
        let lower = message.lowercased()
        func fail(_ code: KeyStoreError.Code, retry: Bool = false) -> RemoteCall.Failure {
            RemoteCall.Failure(error: KeyStoreError(code, reason), retryable: retry)
        }
        switch status.code {
        case 403: return fail(.accessDenied)
        case 404: return fail(.keyNotFound)
        case 429: return fail(.throttled, retry: true)
        case 500...599: return fail(.keyUnavailable, retry: true)
        default:
            if lower.contains("key not found") { return fail(.keyNotFound) }
            if lower.contains("disallowed by policy") || lower.contains("soft-deleted") { return fail(.keyDisabled) }
            if lower.contains("message authentication failed") || lower.contains("invalid ciphertext")
                || lower.contains("unable to decrypt") || lower.contains("invalid version") {
                return fail(.invalidCiphertext)
            }
            return fail(.invalidArgument)
        }
    }

    // MARK: Signing in

    /// The token to send and its generation: the operator's, or an AppRole login's, logging in
    /// first when there is none or two thirds of its lease are gone. Concurrent callers wait for
    /// one login and share its outcome, token or error.
    private func currentToken(deadline: ContinuousClock.Instant) async throws -> (Secret?, Int) {
        guard case .appRole(let roleID, let secretID, let mount) = configuration.auth else {
            guard case .token(let token) = configuration.auth else { return (nil, 0) }
            return (token, 0)
        }
        enum Step { case use(Secret, Int), login, wait }
        let step: Step = session.withLock { s in
            if let token = s.token, let renewAt = s.renewAt, ContinuousClock.now < renewAt { return .use(token, s.generation) }
            if s.loggingIn { return .wait }
            s.loggingIn = true
            return .login
        }
        switch step {
        case .use(let token, let generation):
            return (token, generation)
        case .wait:
            let (token, generation) = try await withCheckedThrowingContinuation { continuation in
                let outcome: Result<(Secret, Int), any Error>? = session.withLock { s in
                    guard s.loggingIn else { return s.token.map { .success(($0, s.generation)) } ?? .failure(KeyStoreError(.accessDenied, "the Vault login failed")) }
                    s.waiting.append(continuation)
                    return nil
                }
                if let outcome { continuation.resume(with: outcome) }
            }
            return (token, generation)
        case .login:
            let outcome: Result<(Secret, Int), any Error>
            do {
                let (token, lease) = try await login(roleID: roleID, secretID: secretID, mount: mount, deadline: deadline)
                let now = ContinuousClock.now
                // Renewed (by a new login) once two thirds of the lease are gone; a lease of 0 does
                // not expire. Milliseconds, so that a lease of a second renews after 666 ms, not at once.
                let renewAt = now + (lease > 0 ? .milliseconds(min(lease, 10 * 365 * 86_400) * 2_000 / 3) : .seconds(86_400 * 365))
                outcome = .success(session.withLock { s in
                    s.generation += 1
                    s.token = token
                    s.obtained = now
                    s.renewAt = renewAt
                    return (token, s.generation)
                })
            } catch {
                outcome = .failure(error)
            }
            let waiting = session.withLock { s in
                s.loggingIn = false
                defer { s.waiting = [] }
                return s.waiting
            }
            for w in waiting { w.resume(with: outcome) }
            let (token, generation) = try outcome.get()
            return (token, generation)
        }
    }

    private struct Login: Encodable {
        var role_id: String
        var secret_id: String
    }

    private struct LoginAnswer: Decodable {
        struct Auth: Decodable {
            var client_token: String
            var lease_duration: Int
        }
        var auth: Auth?
    }

    private func login(roleID: String, secretID: Secret, mount: String, deadline: ContinuousClock.Instant) async throws -> (Secret, Int) {
        let body = Array(try JSONEncoder().encode(Login(role_id: roleID, secret_id: secretID.exposed())))
        let raw: [UInt8]?
        do {
            raw = try await send(.POST, "auth/\(mount)/login", body, token: nil, deadline: deadline, retrying: true, what: "AppRole login")
        } catch let e as KeyStoreError where e.code == .invalidArgument {
            throw KeyStoreError(.accessDenied, e.reason)  // Vault answers 400 to a wrong role or secret ID
        }
        guard let raw, let auth = (try? JSONDecoder().decode(LoginAnswer.self, from: Data(raw)))?.auth else {
            throw KeyStoreError(.accessDenied, "Vault's AppRole login answered without a token")
        }
        return (Secret(auth.client_token), auth.lease_duration)
    }
}
