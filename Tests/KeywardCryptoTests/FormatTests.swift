import Crypto
import Testing
@testable import KeywardCrypto

/// Known answers produced by the Python aws-encryption-sdk 3.3.1 (an independent implementation)
/// for data key 00..1f and message ID 64..83 (v2) or 64..73 (v1).
@Suite struct KeyDerivationTests {
    let dataKey = SecretBytes(copying: (0..<32).map { UInt8($0) })
    let messageID = (100..<132).map { UInt8($0) }

    @Test func committingSuitesDeriveKeyWithSuiteIDAndDeriveKeyLabel() {
        let k478 = KeyDerivation.contentKey(dataKey: dataKey, suite: .aes256GCMHKDFSHA512CommitKey, messageID: messageID)
        let k578 = KeyDerivation.contentKey(dataKey: dataKey, suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384, messageID: messageID)
        #expect(k478.withUnsafeBytes { Array($0) } == hex("fc3bcfb0b21a15f54e7a8dfb4ee76cb60cd2b2a6b71ac8f1fff30fde97cfa964"))
        #expect(k578.withUnsafeBytes { Array($0) } == hex("95db223a8b466778e70084dc09410c71bfac9dff689497ae55a56caae0528da1"))
    }

    @Test func commitKeyUsesCommitKeyLabelOnly() {
        let expected = hex("b7c6b709e969c91cfc201a425d3dd061c11c998e16190e2caef2179c94eecc35")
        #expect(KeyDerivation.committingKeys(dataKey: dataKey, suite: .aes256GCMHKDFSHA512CommitKey, messageID: messageID).commit == expected)
        #expect(KeyDerivation.committingKeys(dataKey: dataKey, suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384, messageID: messageID).commit == expected)
    }

    @Test func theOneExtractPathGivesTheSameKeysAsTheKnownAnswers() {
        let (content, commit) = KeyDerivation.committingKeys(dataKey: dataKey, suite: .aes256GCMHKDFSHA512CommitKey, messageID: messageID)
        #expect(content.withUnsafeBytes { Array($0) } == hex("fc3bcfb0b21a15f54e7a8dfb4ee76cb60cd2b2a6b71ac8f1fff30fde97cfa964"))
        #expect(commit == hex("b7c6b709e969c91cfc201a425d3dd061c11c998e16190e2caef2179c94eecc35"))
        // And agrees with swift-crypto's HKDF (the separate-call path) on random inputs.
        for _ in 0..<200 {
            let key = SecretBytes(randomCount: 32)
            let id = (0..<32).map { _ in UInt8.random(in: 0...255) }
            let (c, k) = KeyDerivation.committingKeys(dataKey: key, suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384, messageID: id)
            let expected = KeyDerivation.contentKey(dataKey: key, suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384, messageID: id)
            #expect(c.withUnsafeBytes { Array($0) } == expected.withUnsafeBytes { Array($0) })
            // The commitment by swift-crypto's HKDF: salt = message ID, info = "COMMITKEY".
            let oracle = key.withUnsafeBytes {
                HKDF<SHA512>.deriveKey(inputKeyMaterial: SymmetricKey(data: $0), salt: id, info: Array("COMMITKEY".utf8), outputByteCount: 32)
            }
            #expect(k == oracle.withUnsafeBytes { Array($0) })
        }
    }

    @Test func version1SuitesUseSuiteIDAndMessageIDAsInfo() {
        let id16 = (100..<116).map { UInt8($0) }
        let s0114 = AlgorithmSuite.byID(0x0114)!, s0378 = AlgorithmSuite.byID(0x0378)!
        let k0114 = KeyDerivation.contentKey(dataKey: SecretBytes(copying: (0..<16).map { UInt8($0) }), suite: s0114, messageID: id16)
        let k0378 = KeyDerivation.contentKey(dataKey: dataKey, suite: s0378, messageID: id16)
        #expect(k0114.withUnsafeBytes { Array($0) } == hex("35361df74f4307d5499d06627e7f5181"))
        #expect(k0378.withUnsafeBytes { Array($0) } == hex("876ffeee5f1247c511c56202fd32ea4ddb9179eec5a471722d3e8dae05e66d44"))
    }

    @Test func identitySuitesUseTheDataKeyItself() {
        let key = SecretBytes(copying: [UInt8](repeating: 9, count: 16))
        let derived = KeyDerivation.contentKey(dataKey: key, suite: .byID(0x0014)!, messageID: [])
        #expect(derived.constantTimeEquals(key))
    }
}

@Suite struct SerializationTests {
    @Test func contextIsSortedByUTF8BytesAsPythonWritesIt() throws {
        let context: EncryptionContext = ["b": "2", "é": "x", "a": "1"]
        #expect(try context.serialized() == hex("00030001610001310001620001320002c3a9000178"))
    }

    @Test func emptyContextSerializesToNothing() throws {
        #expect(try EncryptionContext().serialized() == [])
    }

    @Test func contextKeysAreBytesNotCanonicalStrings() {
        var context = EncryptionContext()
        context["\u{e9}"] = "precomposed"
        context["e\u{301}"] = "decomposed"
        #expect(context.count == 2)
        #expect(context["\u{e9}"] == "precomposed")
    }

    @Test func deserializationRoundTripsAndRefusesDuplicates() throws {
        let context: EncryptionContext = ["k": "v", "long": String(repeating: "x", count: 1000)]
        let bytes = try context.serialized()
        let parsed = try bytes.withUnsafeBytes { try EncryptionContext(deserializing: $0) }
        #expect(parsed == context)
        let duplicate = hex("0002") + hex("0001") + [0x6b] + hex("0001") + [0x76] + hex("0001") + [0x6b] + hex("0001") + [0x77]
        #expect(throws: KeywardCryptoError(.malformedMessage, "")) {
            try duplicate.withUnsafeBytes { try EncryptionContext(deserializing: $0) }
        }
    }

    @Test func deserializationAcceptsUTF8AndRefusesAnythingElse() throws {
        let context: EncryptionContext = ["tenant": "zürich-東京", "ascii": "plain"]
        #expect(try context.serialized().withUnsafeBytes { try EncryptionContext(deserializing: $0) } == context)
        // 0xC3 0x28: a lead byte without its continuation; 0xFF: never in UTF-8; in a key, then a value.
        for bad in [[0xC3, 0x28], [0xFF], [0x61, 0xE2, 0x82]] as [[UInt8]] {
            for asKey in [true, false] {
                let (k, v): ([UInt8], [UInt8]) = asKey ? (bad, [0x76]) : ([0x6b], bad)
                let bytes = hex("0001") + [0, UInt8(k.count)] + k + [0, UInt8(v.count)] + v
                #expect(throws: KeywardCryptoError(.malformedMessage, "")) { try bytes.withUnsafeBytes { try EncryptionContext(deserializing: $0) } }
            }
        }
    }

    @Test func oversizedContextIsRefused() {
        let context: EncryptionContext = ["k": String(repeating: "v", count: 70_000)]
        #expect(throws: KeywardCryptoError(.limitExceeded, "")) { try context.serialized() }
    }

    @Test func frameIVIsTheSequenceNumberLeftPadded() {
        var iv = [UInt8](repeating: 0xFF, count: 12)
        iv.withUnsafeMutableBytes { writeFrameIV(0x0102_0304, to: $0.baseAddress!) }
        #expect(iv == [0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
    }

    @Test func bodyAADLayout() {
        var aad = BodyAAD(messageID: [0xAA, 0xBB])
        let bytes = aad.with(.finalFrame, sequence: 2, length: 5) { Array($0) }
        #expect(bytes == [0xAA, 0xBB] + Array("AWSKMSEncryptionClient Final Frame".utf8) + [0, 0, 0, 2] + [0, 0, 0, 0, 0, 0, 0, 5])
    }

    @Test func suitesParseByIDAndName() {
        #expect(AlgorithmSuite(parsing: "0x0478") == .aes256GCMHKDFSHA512CommitKey)
        #expect(AlgorithmSuite(parsing: "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384") == .aes256GCMHKDFSHA512CommitKeyECDSAP384)
        #expect(AlgorithmSuite(parsing: "1144") == .aes256GCMHKDFSHA512CommitKey)
        #expect(AlgorithmSuite(parsing: "0x9999") == nil)
        #expect(AlgorithmSuite.v1Suites.count == 9)
    }

    @Test func headerWrittenByEncryptorParsesBack() async throws {
        let message = try await encrypt([1, 2, 3], keyring: try aesKeyring(), context: ["a": "b"])
        let (header, length) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        #expect(header.suite == .aes256GCMHKDFSHA512CommitKey)
        #expect(header.messageID.count == 32)
        #expect(header.encryptionContext == ["a": "b"])
        #expect(header.frameLength == 4096)
        #expect(header.commitKey.count == 32)
        #expect(length == header.bodyBytes.count + 16)
    }
}
