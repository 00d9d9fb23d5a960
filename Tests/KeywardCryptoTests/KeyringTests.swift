import Foundation
import Testing
import _CryptoExtras
@testable import KeywardCrypto

@Suite struct KeyringTests {
    @Test(arguments: [16, 24, 32])
    func rawAESKeySizes(bytes: Int) async throws {
        let keyring = try aesKeyring(bytes: bytes)
        let message = try await encrypt([1, 2, 3], keyring: keyring)
        #expect(try await decrypt(message, keyring: keyring) == [1, 2, 3])
        let (header, _) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        let edk = header.encryptedDataKeys[0]
        #expect(edk.providerIDString == "test")
        // name || 128 (tag bits) || 12 (IV length) || IV
        #expect(Array(edk.providerInfo.prefix(10)) == Array("k1".utf8) + [0, 0, 0, 128, 0, 0, 0, 12])
        #expect(edk.providerInfo.count == 2 + 8 + 12)
        #expect(edk.ciphertext.count == 32 + 16)
    }

    @Test func rawAESRefusesBadKeysAndTheReservedNamespace() {
        #expect(throws: KeywardCryptoError(.invalidKey, "")) { try aesKeyring(bytes: 20) }
        #expect(throws: KeywardCryptoError(.invalidArgument, "")) {
            try RawAESKeyring(namespace: "aws-kms", name: "x", key: SecretBytes(randomCount: 32))
        }
    }

    static func rsaPEM() throws -> (privatePEM: [UInt8], publicPEM: [UInt8]) {
        let key = try _RSA.Encryption.PrivateKey(keySize: .bits2048)
        return (Array(key.pemRepresentation.utf8), Array(key.publicKey.pemRepresentation.utf8))
    }

    @Test(arguments: RSAKey.Padding.allCases)
    func rawRSARoundTripsWithEachPadding(padding: RSAKey.Padding) async throws {
        let (priv, pub) = try Self.rsaPEM()
        let encryptOnly = try RawRSAKeyring(namespace: "rsa", name: "r1", key: try RSAKey(pem: pub), padding: padding)
        let full = try RawRSAKeyring(namespace: "rsa", name: "r1", key: try RSAKey(pem: priv), padding: padding)
        let message = try await encrypt(Array("hello".utf8), keyring: encryptOnly)
        #expect(try await decrypt(message, keyring: full) == Array("hello".utf8))
        await expectCode(.invalidKey) { _ = try await decrypt(message, keyring: encryptOnly) }
        // The same key with another padding cannot unwrap.
        let other: RSAKey.Padding = padding == .pkcs1 ? .oaepSHA256 : .pkcs1
        let mismatched = try RawRSAKeyring(namespace: "rsa", name: "r1", key: try RSAKey(pem: priv), padding: other)
        await expectCode(.noDecryptableKey) { _ = try await decrypt(message, keyring: mismatched) }
    }

    @Test func rsaOAEPSHA256InteroperatesWithSwiftCrypto() throws {
        let key = try _RSA.Encryption.PrivateKey(keySize: .bits2048)
        let ours = try RSAKey(pem: Array(key.publicKey.pemRepresentation.utf8))
        let secret: [UInt8] = Array(0..<32)
        let ciphertext = try secret.withUnsafeBytes { try ours.encrypt($0, padding: .oaepSHA256) }
        #expect(Array(try key.decrypt(ciphertext, padding: .PKCS1_OAEP_SHA256)) == secret)
    }

    @Test func rsaRefusesNonRSAAndGarbagePEM() {
        #expect(throws: KeywardCryptoError(.invalidKey, "")) { try RSAKey(pem: Array("not a key".utf8)) }
        let ec = Array(P256.Signing.PrivateKey().pemRepresentation.utf8)
        #expect(throws: KeywardCryptoError(.invalidKey, "")) { try RSAKey(pem: ec) }
    }

    @Test func multiKeyringMessagesDecryptWithAnyMember() async throws {
        let a = try aesKeyring("a"), b = try aesKeyring("b", seed: 50)
        let (priv, _) = try Self.rsaPEM()
        let r = try RawRSAKeyring(namespace: "rsa", name: "r", key: try RSAKey(pem: priv), padding: .oaepSHA1)
        let message = try await encrypt([9, 9], keyring: try MultiKeyring(generator: a, children: [b, r]))
        for keyring in [a, b, r] as [any Keyring] {
            #expect(try await decrypt(message, keyring: keyring) == [9, 9])
        }
        let (header, _) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        #expect(header.encryptedDataKeys.count == 3)
        // A multi-keyring of keys that do not match still fails cleanly.
        await expectCode(.noDecryptableKey) {
            _ = try await decrypt(message, keyring: try MultiKeyring(generator: nil, children: [try aesKeyring("zz")]))
        }
    }

    @Test func wrappingKeySpecsParseAndNeverEchoKeys() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("kw-spec-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let keyFile = dir.appendingPathComponent("k").path
        try Data(repeating: 1, count: 32).write(to: URL(fileURLWithPath: keyFile))
        let keyring = try WrappingKeySpec.keyring(from: "raw-aes:namespace=ns,name=n,key=@\(keyFile)")
        #expect("\(keyring)" == "raw-aes:namespace=ns,name=n")

        let secret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0IQ=="  // 33 bytes: a bad size
        do {
            _ = try WrappingKeySpec.keyring(from: "raw-aes:namespace=ns,name=n,key=base64:\(secret)")
            Issue.record("a 33-byte key was accepted")
        } catch {
            #expect(!"\(error)".contains(secret))
            #expect((error as? KeywardCryptoError)?.code == .invalidKey)
        }
        for bad in ["raw-aes:namespace=ns,name=n", "raw-aes:namespace=ns,name=n,key=@/nonexistent",
                    "raw-aes:namespace=ns,name=n,key=@\(keyFile),extra=1", "nope:x=y", "raw-rsa:namespace=a,name=b,key=@\(keyFile),padding=oaep-md5",
                    "raw-aes:namespace=ns,namespace=ns2,name=n,key=@\(keyFile)"] {
            #expect(throws: KeywardCryptoError.self, "\(bad)") { try WrappingKeySpec.keyring(from: bad) }
        }
    }
}

import Crypto
