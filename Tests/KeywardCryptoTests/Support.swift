import Foundation
@testable import KeywardCrypto
import KeywardTesting
import Synchronization

func aesKeyring(_ name: String = "k1", bytes: Int = 32, seed: UInt8 = 7) throws -> RawAESKeyring {
    try RawAESKeyring(namespace: "test", name: name, key: SecretBytes(copying: (0..<bytes).map { UInt8($0) &+ seed }))
}

func randomBytes(_ n: Int) -> [UInt8] {
    // Eight bytes per draw: megabytes a byte at a time take seconds in a debug build.
    var g = SystemRandomNumberGenerator()
    var bytes = [UInt8](repeating: 0, count: n)
    bytes.withUnsafeMutableBytes { p in
        var i = 0
        while i < n {
            withUnsafeBytes(of: g.next()) { word in
                for w in word.prefix(n - i) { p[i] = w; i += 1 }
            }
        }
    }
    return bytes
}

func encrypt(_ plaintext: [UInt8], keyring: some Keyring, suite: AlgorithmSuite = .aes256GCMHKDFSHA512CommitKey,
             frameLength: Int = 4096, context: EncryptionContext = ["purpose": "test"]) async throws -> [UInt8] {
    try await Message.encrypt(plaintext, materialsManager: DefaultMaterialsManager(keyring: keyring), context: context,
                              suite: suite, frameLength: frameLength)
}

func decrypt(_ message: [UInt8], keyring: some Keyring, options: DecryptionOptions = DecryptionOptions()) async throws -> [UInt8] {
    try await Message.decrypt(message, materialsManager: DefaultMaterialsManager(keyring: keyring), options: options).plaintext
}

/// Feeds a message to the streaming decryptor in chunks of the given sizes (cycled).
func decryptInChunks(_ message: [UInt8], keyring: some Keyring, chunks: [Int]) async throws -> [UInt8] {
    var d = MessageDecryptor()
    var out: [UInt8] = []
    var offset = 0, i = 0
    let manager = DefaultMaterialsManager(keyring: keyring)
    while offset < message.count {
        let n = min(max(chunks[i % chunks.count], 1), message.count - offset)
        i += 1
        try message.withUnsafeBytes { try d.update(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n])) }
        offset += n
        if let request = d.materialsRequest { try d.begin(with: try await manager.decryptionMaterials(for: request)) }
        d.drain { out.append(contentsOf: $0) }
    }
    try d.finish()
    d.drain { out.append(contentsOf: $0) }
    return out
}

/// Encrypts with the streaming encryptor, feeding plaintext in chunks of the given sizes (the last
/// one is cut to what remains), draining after each.
func encryptInChunks(_ plaintext: [UInt8], keyring: some Keyring, suite: AlgorithmSuite, frameLength: Int,
                     chunks: [Int]) async throws -> [UInt8] {
    let materials = try await DefaultMaterialsManager(keyring: keyring).encryptionMaterials(
        for: EncryptionMaterialsRequest(encryptionContext: [:], suite: suite))
    var e = try MessageEncryptor(materials: materials, frameLength: frameLength)
    var message: [UInt8] = []
    var offset = 0
    for n in chunks + [plaintext.count] {
        let m = min(n, plaintext.count - offset)
        try plaintext.withUnsafeBytes { try e.update(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + m])) }
        offset += m
        e.drain { message.append(contentsOf: $0) }
    }
    try e.finish()
    e.drain { message.append(contentsOf: $0) }
    return message
}

/// Wraps a keyring and counts how often it is asked: a stand-in for key-store calls.
final class CountingKeyring: Keyring {
    let inner: any Keyring
    private let counts = Mutex((encrypt: 0, decrypt: 0))
    init(_ inner: any Keyring) { self.inner = inner }
    var encryptCalls: Int { counts.withLock { $0.encrypt } }
    var decryptCalls: Int { counts.withLock { $0.decrypt } }
    func onEncrypt(_ m: EncryptionMaterials) async throws -> EncryptionMaterials {
        counts.withLock { $0.encrypt += 1 }
        return try await inner.onEncrypt(m)
    }
    func onDecrypt(_ m: DecryptionMaterials, encryptedDataKeys: [EncryptedDataKey]) async throws -> DecryptionMaterials {
        counts.withLock { $0.decrypt += 1 }
        return try await inner.onDecrypt(m, encryptedDataKeys: encryptedDataKeys)
    }
}

func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

/// Expects `body` to throw a KeywardCryptoError with `code`.
func expectCode(_ code: KeywardCryptoError.Code, _ body: () async throws -> Void,
                sourceLocation: SourceLocation = #_sourceLocation) async {
    await expectError(code, as: KeywardCryptoError.self, sourceLocation: sourceLocation, body)
}

import Testing
