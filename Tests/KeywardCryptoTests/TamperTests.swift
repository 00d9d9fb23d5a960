import Foundation
import Testing
@testable import KeywardCrypto

/// Every way a message can be wrong is refused, and the one-shot API releases nothing.
@Suite struct TamperTests {
    static let suites: [AlgorithmSuite] = [.aes256GCMHKDFSHA512CommitKey, .aes256GCMHKDFSHA512CommitKeyECDSAP384]

    func layout(_ message: [UInt8]) throws -> (header: MessageHeader, headerLength: Int) {
        let (h, n) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        return (h, n)
    }

    @Test(arguments: suites)
    func flippingAnyByteIsDetected(suite: AlgorithmSuite) async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt(randomBytes(300), keyring: keyring, suite: suite, frameLength: 128)
        // Every byte position: header fields, EDK, frame headers, ciphertext, tags, signature.
        for i in 0..<message.count {
            var bad = message
            bad[i] ^= 0x01
            do {
                _ = try await decrypt(bad, keyring: keyring)
                Issue.record("flipping byte \(i) of \(message.count) went unnoticed")
            } catch is KeywardCryptoError {
                // expected
            }
        }
    }

    @Test(arguments: suites)
    func tamperingFailsWithTheRightCode(suite: AlgorithmSuite) async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt(randomBytes(300), keyring: keyring, suite: suite, frameLength: 128)
        let (header, headerLength) = try layout(message)

        // The encryption context value (in the header body): header tag fails.
        var badContext = message
        let pair = Array("purpose".utf8) + [0, 4] + Array("test".utf8)
        let at = (0...(header.bodyBytes.count - pair.count)).first { Array(header.bodyBytes[$0..<$0 + pair.count]) == pair }!
        badContext[at + pair.count - 1] ^= 0x20  // "test" -> "tesT"
        await expectCode(.noDecryptableKey) { _ = try await decrypt(badContext, keyring: keyring) }  // EDK AAD is the context

        // The header tag itself.
        var badTag = message
        badTag[headerLength - 1] ^= 1
        await expectCode(.authenticationFailed) { _ = try await decrypt(badTag, keyring: keyring) }

        // The commitment (suite data) — a header change that the commit check catches first.
        var badCommit = message
        badCommit[header.bodyBytes.count - 1] ^= 1
        await expectCode(.commitmentMismatch) { _ = try await decrypt(badCommit, keyring: keyring) }

        // First frame's ciphertext and its tag.
        var badFrame = message
        badFrame[headerLength + 16 + 5] ^= 1
        await expectCode(.authenticationFailed) { _ = try await decrypt(badFrame, keyring: keyring) }
        var badFrameTag = message
        badFrameTag[headerLength + 16 + 128 + 3] ^= 1
        await expectCode(.authenticationFailed) { _ = try await decrypt(badFrameTag, keyring: keyring) }

        // Reordered frames.
        var swapped = message
        let f = 16 + 128 + 16
        swapped.replaceSubrange(headerLength..<headerLength + 2 * f,
                                with: message[headerLength + f..<headerLength + 2 * f] + message[headerLength..<headerLength + f])
        await expectCode(.malformedMessage) { _ = try await decrypt(swapped, keyring: keyring) }

        if suite.isSigned {
            var badSignature = message
            badSignature[message.count - 5] ^= 1
            await expectCode(.signatureInvalid) { _ = try await decrypt(badSignature, keyring: keyring) }
        }
    }

    @Test(arguments: suites)
    func tamperingInsideAParallelBatchNamesTheFrame(suite: AlgorithmSuite) async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt(randomBytes(1 << 20), keyring: keyring, suite: suite, frameLength: 4096)
        let (_, headerLength) = try layout(message)
        for frame in [1, 2, 100, 255] {  // first, second, middle, last regular frame
            var bad = message
            bad[headerLength + (frame - 1) * (16 + 4096 + 16) + 16 + 7] ^= 1
            do {
                _ = try await decrypt(bad, keyring: keyring)
                Issue.record("frame \(frame) tampering went unnoticed")
            } catch let e as KeywardCryptoError {
                #expect(e.code == .authenticationFailed)
                #expect(e.reason.contains("frame \(frame) "), "\(e.reason)")
            }
        }
    }

    @Test(arguments: suites)
    func everyTruncationIsRefused(suite: AlgorithmSuite) async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt(randomBytes(200), keyring: keyring, suite: suite, frameLength: 64)
        for length in 0..<message.count {
            do {
                _ = try await decrypt(Array(message[0..<length]), keyring: keyring)
                Issue.record("a message cut to \(length) of \(message.count) bytes was accepted")
            } catch let e as KeywardCryptoError {
                #expect([.truncatedMessage, .signatureInvalid, .malformedMessage].contains(e.code), "at \(length): \(e)")
            }
        }
    }

    @Test(arguments: suites)
    func trailingBytesAreAnError(suite: AlgorithmSuite) async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt(randomBytes(10), keyring: keyring, suite: suite)
        await expectCode(.trailingBytes) { _ = try await decrypt(message + [0], keyring: keyring) }
        await expectCode(.trailingBytes) { _ = try await decrypt(message + message, keyring: keyring) }
    }

    @Test func signedMessagesWithholdTheFinalFrameUntilTheSignatureVerifies() async throws {
        let keyring = try aesKeyring()
        let plaintext = randomBytes(300)
        let message = try await encrypt(plaintext, keyring: keyring, suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384, frameLength: 128)
        var d = MessageDecryptor()
        var released: [UInt8] = []
        // Feed everything but the last byte of the signature.
        try message.withUnsafeBytes { try d.update(UnsafeRawBufferPointer(rebasing: $0[0..<message.count - 1])) }
        if let r = d.materialsRequest {
            try d.begin(with: try await DefaultMaterialsManager(keyring: keyring).decryptionMaterials(for: r))
        }
        d.drain { released.append(contentsOf: $0) }
        #expect(released == Array(plaintext[0..<256]), "only the two regular frames may be out before the signature")
        try message.withUnsafeBytes { try d.update(UnsafeRawBufferPointer(rebasing: $0[(message.count - 1)...])) }
        try d.finish()
        d.drain { released.append(contentsOf: $0) }
        #expect(released == plaintext)
    }

    @Test func wrongKeyAndWrongNameAreNoDecryptableKey() async throws {
        let message = try await encrypt([1, 2, 3], keyring: try aesKeyring())
        await expectCode(.noDecryptableKey) { _ = try await decrypt(message, keyring: try aesKeyring(seed: 99)) }
        await expectCode(.noDecryptableKey) { _ = try await decrypt(message, keyring: try aesKeyring("other")) }
    }

    @Test func requiredContextMustBePresent() async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt([1], keyring: keyring, context: ["tenant": "a"])
        #expect(try await decrypt(message, keyring: keyring, options: DecryptionOptions(requiredContext: ["tenant": "a"])) == [1])
        await expectCode(.encryptionContextMismatch) {
            _ = try await decrypt(message, keyring: keyring, options: DecryptionOptions(requiredContext: ["tenant": "b"]))
        }
        await expectCode(.encryptionContextMismatch) {
            _ = try await decrypt(message, keyring: keyring, options: DecryptionOptions(requiredContext: ["other": "a"]))
        }
    }

    @Test func base64OfAMessageIsRecognised() async throws {
        let keyring = try aesKeyring()
        let message = try await encrypt([1], keyring: keyring)
        let b64 = Array(Data(message).base64EncodedString().utf8)
        await expectCode(.base64Input) { _ = try await decrypt(b64, keyring: keyring) }
    }

    @Test func tooManyEncryptedDataKeysIsRefusedBeforeUnwrapping() async throws {
        let counting = CountingKeyring(try aesKeyring())
        let multi = try MultiKeyring(generator: counting, children: [try aesKeyring("k2"), try aesKeyring("k3")])
        let message = try await encrypt([1], keyring: multi)
        await expectCode(.tooManyEncryptedDataKeys) {
            _ = try await decrypt(message, keyring: counting, options: DecryptionOptions(maxEncryptedDataKeys: 2))
        }
        #expect(counting.decryptCalls == 0)
        #expect(try await decrypt(message, keyring: counting, options: DecryptionOptions(maxEncryptedDataKeys: 3)) == [1])
    }

    @Test func garbageAndEmptyInputAreRefused() async throws {
        let keyring = try aesKeyring()
        await expectCode(.truncatedMessage) { _ = try await decrypt([], keyring: keyring) }
        await expectCode(.malformedMessage) { _ = try await decrypt([0x07, 1, 2, 3], keyring: keyring) }
        await expectCode(.unsupportedAlgorithm) { _ = try await decrypt([0x02, 0x12, 0x34] + [UInt8](repeating: 0, count: 40), keyring: keyring) }
    }

    @Test func commitmentPolicyForbidsWritingV1AndAllowsNoUncommittedReads() async throws {
        let manager = DefaultMaterialsManager(keyring: try aesKeyring())
        await expectCode(.commitmentPolicy) {
            _ = try await Message.encrypt([1], materialsManager: manager, context: [:], commitmentPolicy: .forbidEncryptAllowDecrypt)
        }
        await expectCode(.commitmentPolicy) {
            _ = try await Message.encrypt([1], materialsManager: manager, context: [:], suite: .byID(0x0178)!)
        }
        #expect(throws: KeywardCryptoError(.commitmentPolicy, "")) {
            try CommitmentPolicy.requireEncryptRequireDecrypt.checkDecrypt(.byID(0x0178)!)
        }
        try CommitmentPolicy.requireEncryptAllowDecrypt.checkDecrypt(.byID(0x0178)!)
    }

    @Test func reservedContextKeysAreRefused() async throws {
        await expectCode(.invalidEncryptionContext) {
            _ = try await encrypt([1], keyring: try aesKeyring(), context: ["aws-crypto-public-key": "x"])
        }
    }
}
