import CPKCS11
import Foundation
import KeywardBlockingIO
import KeywardCrypto
import Synchronization

/// Hardware security modules over PKCS#11. A key is the set of AES secret-key objects on a token
/// that share a label; each object is a version, told apart by CKA_ID (read as a big-endian
/// number), and the highest is current. Keys are generated on the token, sensitive and
/// non-extractable; wrapping is AES-GCM inside the token with the encryption context as AAD.
///
/// Wrapped data key layout: `0x01 || id length (1) || CKA_ID || IV (12) || ciphertext || tag (16)`.
/// Disabling clears CKA_ENCRYPT and CKA_DECRYPT on every version. Tokens have no deletion
/// schedule, so scheduling deletion is refused with a clear error.
public final class PKCS11KeyStore: KeyStore {
    public let scheme = "pkcs11"
    public let providerID = "keyward-pkcs11"
    private let tokens = Mutex<[String: PKCS11Token]>([:])
    /// Parsed URIs by key ID, so the PIN file is read once, not on every wrap and unwrap.
    private let uris = Mutex<[String: PKCS11URI]>([:])

    /// How long a call may take (waiting for a thread, a session's calls together, and loading the
    /// module the first time): past it the request fails with `keyUnavailable`, as it would for a
    /// remote store. As with a remote store, a change that timed out (a rotation, say) may still
    /// complete on the token.
    public let timeout: Duration

    public init(timeout: Duration = .seconds(10)) {
        self.timeout = timeout
    }

    /// `KEYWARD_PKCS11_TIMEOUT_MS` (1 to 3600000; default 10000).
    public static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> PKCS11KeyStore {
        guard let text = env["KEYWARD_PKCS11_TIMEOUT_MS"] else { return PKCS11KeyStore() }
        guard let ms = Int(text), (1...3_600_000).contains(ms) else {
            throw KeyStoreError(.invalidArgument, "KEYWARD_PKCS11_TIMEOUT_MS must be 1 to 3600000 milliseconds")
        }
        return PKCS11KeyStore(timeout: .milliseconds(ms))
    }

    /// Encrypted data keys record the key's identity, never the module path or PIN.
    public func providerInfo(forKeyID keyID: String) throws -> String { try uri(keyID).identity }

    private func uri(_ keyID: String) throws -> PKCS11URI {
        if let parsed = uris.withLock({ $0[keyID] }) { return parsed }
        let parsed = try PKCS11URI(keyID)
        uris.withLock { $0[keyID] = parsed }
        return parsed
    }

    /// Runs `body` in a session of `uri`'s token, on one of its module's threads: a module's calls
    /// block (a network HSM's for a round trip or more each, for ever if it hangs), and the caller's
    /// thread is an event loop in `keyward serve`, serving other connections meanwhile. Loading the
    /// module and finding the token's slot happen there too. A call that takes longer than
    /// ``timeout`` fails (`keyUnavailable`) while its thread stays with the module.
    func withSession<R: Sendable>(_ uri: PKCS11URI, _ body: @escaping @Sendable (PKCS11Session) throws -> R) async throws -> R {
        let timeout = timeout
        return try await PKCS11Module.path(uri.modulePath).calls.run(within: timeout, orThrow: {
            KeyStoreError(.keyUnavailable, "PKCS#11 token \(uri.token) did not answer within \(timeout)")
        }) { try self.token(uri).withSession(body) }
    }

    private func token(_ uri: PKCS11URI) throws -> PKCS11Token {
        let name = "\(uri.modulePath)\u{0}\(uri.token)"
        if let t = tokens.withLock({ $0[name] }) { return t }
        let module = try PKCS11Module.load(uri.modulePath)
        let fresh = PKCS11Token(module: module, slot: try module.slot(token: uri.token), label: uri.token, pin: uri.pin)
        return tokens.withLock { tokens in
            if let existing = tokens[name] { return existing }
            tokens[name] = fresh
            return fresh
        }
    }

    static func dataKeyAAD(_ uri: PKCS11URI, _ context: EncryptionContext) throws -> [UInt8] {
        Array("keyward-pkcs11-dek:\(uri.object)".utf8) + (try context.serialized())
    }

    public func generateDataKey(keyID: String, length: Int, context: EncryptionContext) async throws -> (plaintext: SecretBytes, wrapped: WrappedKey) {
        let dataKey = SecretBytes(randomCount: length)
        return (dataKey, try await encrypt(keyID: keyID, plaintext: dataKey, context: context))
    }

    public func encrypt(keyID: String, plaintext: SecretBytes, context: EncryptionContext) async throws -> WrappedKey {
        let uri = try uri(keyID)
        let aad = try Self.dataKeyAAD(uri, context)
        return try await withSession(uri) { s in
            guard let current = try s.versions(uri).last else {
                throw KeyStoreError(.keyNotFound, "no PKCS#11 key \(uri)")
            }
            let iv = SecretBytes(randomCount: AESGCM.ivLength).withUnsafeBytes { Array($0) }
            let sealed = try plaintext.withUnsafeBytes { try s.gcm(encrypt: true, key: current.handle, iv: iv, aad: aad, input: Array($0)) }
            return WrappedKey(ciphertext: [1, UInt8(current.id.count)] + current.id + iv + sealed, keyID: uri.identity)
        }
    }

    public func decrypt(keyID: String, ciphertext: [UInt8], context: EncryptionContext) async throws -> SecretBytes {
        let uri = try uri(keyID)
        guard ciphertext.count >= 2, ciphertext[0] == 1, ciphertext.count >= 2 + Int(ciphertext[1]) + 12 + 16 else {
            throw KeyStoreError(.invalidCiphertext, "not a data key wrapped by the PKCS#11 store")
        }
        let idEnd = 2 + Int(ciphertext[1])
        let id = Array(ciphertext[2..<idEnd])
        let iv = Array(ciphertext[idEnd..<idEnd + 12]), sealed = Array(ciphertext[(idEnd + 12)...])
        let aad = try Self.dataKeyAAD(uri, context)
        return try await withSession(uri) { s in
            guard let version = try s.versions(uri, allVersions: true).first(where: { $0.id == id }) else {
                throw KeyStoreError(.invalidCiphertext, "\(uri) has no version with this CKA_ID")
            }
            var plaintext = try s.gcm(encrypt: false, key: version.handle, iv: iv, aad: aad, input: sealed)
            defer { for i in plaintext.indices { plaintext[i] = 0 } }
            return SecretBytes(copying: plaintext)
        }
    }

    public func describe(keyID: String) async throws -> KeyDescription {
        let uri = try uri(keyID)
        return try await withSession(uri) { s in
            let versions = try s.versions(uri, allVersions: true)
            guard let current = versions.last else { throw KeyStoreError(.keyNotFound, "no PKCS#11 key \(uri)") }
            return KeyDescription(reference: uri.description, state: try s.bool(current.handle, CKA_DECRYPT) ? .enabled : .disabled,
                                  versions: versions.count)
        }
    }

    public func createKey(name: String?) async throws -> KeyDescription {
        guard let name else { throw KeyStoreError(.invalidArgument, "a PKCS#11 key needs token= and object=") }
        let uri = try uri(name)
        try await withSession(uri) { s in
            guard try s.versions(uri, allVersions: true).isEmpty else {
                throw KeyStoreError(.alreadyExists, "\(uri) already exists")
            }
            try s.generate(label: uri.object, id: uri.id ?? [1])
        }
        return try await describe(keyID: name)
    }

    public func rotateKey(keyID: String) async throws {
        let uri = try uri(keyID)
        try await withSession(uri) { s in
            guard let current = try s.versions(uri, allVersions: true).last else { throw KeyStoreError(.keyNotFound, "no PKCS#11 key \(uri)") }
            guard try s.bool(current.handle, CKA_DECRYPT) else { throw KeyStoreError(.keyDisabled, "\(uri) is disabled") }
            try s.generate(label: uri.object, id: PKCS11Session.next(current.id))
        }
    }

    public func enableKey(keyID: String) async throws { try await setUsable(keyID, true) }
    public func disableKey(keyID: String) async throws { try await setUsable(keyID, false) }

    private func setUsable(_ keyID: String, _ usable: Bool) async throws {
        let uri = try uri(keyID)
        try await withSession(uri) { s in
            let versions = try s.versions(uri, allVersions: true)
            guard !versions.isEmpty else { throw KeyStoreError(.keyNotFound, "no PKCS#11 key \(uri)") }
            for v in versions { try s.setUsable(v.handle, usable) }
        }
    }

    /// Tokens keep no schedule and Keyward destroys no token object: the HSM operator does.
    public var deletion: KeyDeletion { .unsupported }

    public func scheduleKeyDeletion(keyID: String, days: Int) async throws -> Date {
        throw KeyStoreError(.invalidArgument, "PKCS#11 tokens keep no deletion schedule: disable the key now and destroy its objects with the HSM's tools when the waiting period ends")
    }

    public func cancelKeyDeletion(keyID: String) async throws {
        throw KeyStoreError(.invalidArgument, "PKCS#11 tokens keep no deletion schedule")
    }

    public func listKeys() async throws -> [KeyDescription] {
        throw KeyStoreError(.invalidArgument, "list a token's keys with: keyward keys show pkcs11:token=…;object=…, or pkcs11-tool --list-objects")
    }
}

/// A token's slot, login state and pool of open sessions.
final class PKCS11Token: Sendable {
    let module: PKCS11Module
    let slot: CK_SLOT_ID
    let label: String
    private let pin: SecretBytes?
    private let idle = Mutex<[CK_SESSION_HANDLE]>([])
    private let loggedIn = Mutex(false)

    init(module: PKCS11Module, slot: CK_SLOT_ID, label: String, pin: SecretBytes?) {
        self.module = module
        self.slot = slot
        self.label = label
        self.pin = pin
    }

    /// Runs `body` on a logged-in session taken from the pool (or opened), and returns it after.
    func withSession<R>(_ body: (PKCS11Session) throws -> R) throws -> R {
        let f = module.functions.pointee
        var handle: CK_SESSION_HANDLE
        if let pooled = idle.withLock({ $0.popLast() }) {
            handle = pooled
        } else {
            handle = 0
            try module.check(f.C_OpenSession!(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nil, nil, &handle), "C_OpenSession")
        }
        do {
            try login(handle)
            let result = try body(PKCS11Session(module: module, handle: handle))
            idle.withLock { $0.append(handle) }
            return result
        } catch let e as KeyStoreError where e.code == .keyUnavailable {
            _ = f.C_CloseSession!(handle)  // the session may be broken: do not pool it
            throw e
        } catch {
            idle.withLock { $0.append(handle) }
            throw error
        }
    }

    /// Logs the application in once (login state is per token, shared by all its sessions).
    private func login(_ session: CK_SESSION_HANDLE) throws {
        try loggedIn.withLock { done in
            guard !done else { return }
            guard let pin else {
                throw KeyStoreError(.accessDenied, "token \(label) needs a PIN: add pin-value= or pin-source= to the pkcs11: URI")
            }
            let rv = pin.withUnsafeBytes { p in
                module.functions.pointee.C_Login!(session, CKU_USER, UnsafeMutablePointer(mutating: p.bindMemory(to: CK_UTF8CHAR.self).baseAddress), CK_ULONG(p.count))
            }
            guard rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN else { throw PKCS11Module.error(rv, "C_Login on token \(label)") }
            done = true
        }
    }
}

/// Calls on one session.
struct PKCS11Session {
    let module: PKCS11Module
    let handle: CK_SESSION_HANDLE
    private var f: CK_FUNCTION_LIST { module.functions.pointee }

    struct Version { var handle: CK_OBJECT_HANDLE; var id: [UInt8] }

    /// The key's objects by CKA_ID, lowest first. With an id= in the URI only that object counts
    /// as current, unless every version is asked for.
    func versions(_ uri: PKCS11URI, allVersions: Bool = false) throws -> [Version] {
        var keyClass = CKO_SECRET_KEY
        var label = Array(uri.object.utf8)
        var found: [CK_OBJECT_HANDLE] = []
        try withUnsafeMutablePointer(to: &keyClass) { classPointer in
            try label.withUnsafeMutableBytes { labelBytes in
                var template = [
                    CK_ATTRIBUTE(type: CKA_CLASS, pValue: UnsafeMutableRawPointer(classPointer), ulValueLen: CK_ULONG(MemoryLayout<CK_OBJECT_CLASS>.size)),
                    CK_ATTRIBUTE(type: CKA_LABEL, pValue: labelBytes.baseAddress, ulValueLen: CK_ULONG(labelBytes.count)),
                ]
                try module.check(f.C_FindObjectsInit!(handle, &template, CK_ULONG(template.count)), "C_FindObjectsInit")
                defer { _ = f.C_FindObjectsFinal!(handle) }
                var batch = [CK_OBJECT_HANDLE](repeating: 0, count: 64)
                while true {
                    var n: CK_ULONG = 0
                    try module.check(f.C_FindObjects!(handle, &batch, CK_ULONG(batch.count), &n), "C_FindObjects")
                    if n == 0 { break }
                    found += batch.prefix(Int(n))
                }
            }
        }
        var versions = try found.map { Version(handle: $0, id: try bytes($0, CKA_ID)) }
        versions.sort { Self.number($0.id) < Self.number($1.id) }
        if let id = uri.id, !allVersions { versions = versions.filter { $0.id == id } }
        return versions
    }

    func bytes(_ object: CK_OBJECT_HANDLE, _ type: CK_ATTRIBUTE_TYPE) throws -> [UInt8] {
        var attribute = CK_ATTRIBUTE(type: type, pValue: nil, ulValueLen: 0)
        try module.check(f.C_GetAttributeValue!(handle, object, &attribute, 1), "C_GetAttributeValue")
        var value = [UInt8](repeating: 0, count: Int(attribute.ulValueLen))
        try value.withUnsafeMutableBytes { v in
            attribute.pValue = v.baseAddress
            try module.check(f.C_GetAttributeValue!(handle, object, &attribute, 1), "C_GetAttributeValue")
        }
        return value
    }

    func bool(_ object: CK_OBJECT_HANDLE, _ type: CK_ATTRIBUTE_TYPE) throws -> Bool {
        try bytes(object, type).first == CK_BBOOL(CK_TRUE)
    }

    func setUsable(_ object: CK_OBJECT_HANDLE, _ usable: Bool) throws {
        var value = CK_BBOOL(usable ? CK_TRUE : CK_FALSE), value2 = value
        try withUnsafeMutablePointer(to: &value) { a in
            try withUnsafeMutablePointer(to: &value2) { b in
                var template = [CK_ATTRIBUTE(type: CKA_ENCRYPT, pValue: a, ulValueLen: 1), CK_ATTRIBUTE(type: CKA_DECRYPT, pValue: b, ulValueLen: 1)]
                try module.check(f.C_SetAttributeValue!(handle, object, &template, 2), "C_SetAttributeValue")
            }
        }
    }

    /// A new AES-256 key on the token: sensitive, never extractable, for encrypt and decrypt only.
    func generate(label: String, id: [UInt8]) throws {
        var mechanism = CK_MECHANISM(mechanism: CKM_AES_KEY_GEN, pParameter: nil, ulParameterLen: 0)
        var keyClass = CKO_SECRET_KEY, keyType = CKK_AES, length: CK_ULONG = 32
        var yes = CK_BBOOL(CK_TRUE), no = CK_BBOOL(CK_FALSE)
        var labelBytes = Array(label.utf8), idBytes = id
        var object: CK_OBJECT_HANDLE = 0
        let size = CK_ULONG(MemoryLayout<CK_ULONG>.size)
        try withUnsafeMutablePointer(to: &keyClass) { c in
        try withUnsafeMutablePointer(to: &keyType) { t in
        try withUnsafeMutablePointer(to: &length) { l in
        try withUnsafeMutablePointer(to: &yes) { y in
        try withUnsafeMutablePointer(to: &no) { n in
        try labelBytes.withUnsafeMutableBytes { lb in
        try idBytes.withUnsafeMutableBytes { ib in
            var template = [
                CK_ATTRIBUTE(type: CKA_CLASS, pValue: c, ulValueLen: size),
                CK_ATTRIBUTE(type: CKA_KEY_TYPE, pValue: t, ulValueLen: size),
                CK_ATTRIBUTE(type: CKA_VALUE_LEN, pValue: l, ulValueLen: size),
                CK_ATTRIBUTE(type: CKA_TOKEN, pValue: y, ulValueLen: 1),
                CK_ATTRIBUTE(type: CKA_PRIVATE, pValue: y, ulValueLen: 1),
                CK_ATTRIBUTE(type: CKA_SENSITIVE, pValue: y, ulValueLen: 1),
                CK_ATTRIBUTE(type: CKA_EXTRACTABLE, pValue: n, ulValueLen: 1),
                CK_ATTRIBUTE(type: CKA_ENCRYPT, pValue: y, ulValueLen: 1),
                CK_ATTRIBUTE(type: CKA_DECRYPT, pValue: y, ulValueLen: 1),
                CK_ATTRIBUTE(type: CKA_LABEL, pValue: lb.baseAddress, ulValueLen: CK_ULONG(lb.count)),
                CK_ATTRIBUTE(type: CKA_ID, pValue: ib.baseAddress, ulValueLen: CK_ULONG(ib.count)),
            ]
            try module.check(f.C_GenerateKey!(handle, &mechanism, &template, CK_ULONG(template.count), &object), "C_GenerateKey")
        }}}}}}}
    }

    /// AES-GCM inside the token, 96-bit IV, 128-bit tag; the output is ciphertext || tag.
    func gcm(encrypt: Bool, key: CK_OBJECT_HANDLE, iv: [UInt8], aad: [UInt8], input: [UInt8]) throws -> [UInt8] {
        var iv = iv, aad = aad, input = input
        var output = [UInt8](repeating: 0, count: input.count + 16)
        var outputLength = CK_ULONG(output.count)
        try iv.withUnsafeMutableBufferPointer { ivp in
            try aad.withUnsafeMutableBufferPointer { ap in
                var params = CK_GCM_PARAMS(pIv: ivp.baseAddress, ulIvLen: CK_ULONG(ivp.count), ulIvBits: CK_ULONG(ivp.count * 8),
                                           pAAD: ap.baseAddress, ulAADLen: CK_ULONG(ap.count), ulTagBits: 128)
                try withUnsafeMutablePointer(to: &params) { pp in
                    var mechanism = CK_MECHANISM(mechanism: CKM_AES_GCM, pParameter: UnsafeMutableRawPointer(pp),
                                                 ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size))
                    if encrypt {
                        try module.check(f.C_EncryptInit!(handle, &mechanism, key), "C_EncryptInit")
                        try module.check(f.C_Encrypt!(handle, &input, CK_ULONG(input.count), &output, &outputLength), "C_Encrypt")
                    } else {
                        try module.check(f.C_DecryptInit!(handle, &mechanism, key), "C_DecryptInit")
                        let rv = f.C_Decrypt!(handle, &input, CK_ULONG(input.count), &output, &outputLength)
                        // Modules differ in how they report a tag mismatch; any decrypt failure here is that.
                        guard rv == CKR_OK else {
                            if rv == CKR_KEY_FUNCTION_NOT_PERMITTED { throw PKCS11Module.error(rv, "C_Decrypt") }
                            throw KeyStoreError(.invalidCiphertext, "the token could not unwrap this data key (CKR 0x\(String(rv, radix: 16)))")
                        }
                    }
                }
            }
        }
        let result = Array(output.prefix(Int(outputLength)))
        for i in output.indices { output[i] = 0 }
        for i in input.indices { input[i] = 0 }
        return result
    }

    static func number(_ id: [UInt8]) -> UInt64 { id.suffix(8).reduce(0) { $0 << 8 | UInt64($1) } }

    /// The CKA_ID after `id`, at least as long.
    static func next(_ id: [UInt8]) -> [UInt8] {
        let n = number(id) + 1
        var out = withUnsafeBytes(of: n.bigEndian) { Array($0) }
        while out.count > max(id.count, 1), out.first == 0 { out.removeFirst() }
        return out
    }
}
