import PropertyBased
import Synchronization
import Testing
@testable import KeywardCrypto

@Suite struct RoundTripTests {
    static let suites: [AlgorithmSuite] = [.aes256GCMHKDFSHA512CommitKey, .aes256GCMHKDFSHA512CommitKeyECDSAP384]

    @Test(arguments: suites, [1, 128, 4096])
    func sizesAroundFrameBoundaries(suite: AlgorithmSuite, frame: Int) async throws {
        let keyring = try aesKeyring()
        for size in Set([0, 1, max(frame - 1, 0), frame, frame + 1, 3 * frame, 3 * frame + 7]) {
            let plaintext = randomBytes(size)
            let message = try await encrypt(plaintext, keyring: keyring, suite: suite, frameLength: frame)
            #expect(try await decrypt(message, keyring: keyring) == plaintext, "size \(size)")
        }
    }

    @Test func framesAreWrittenAsTheFormatSays() async throws {
        // 2.5 frames: two regular frames and a final frame of half a frame.
        let message = try await encrypt(randomBytes(250), keyring: try aesKeyring(), frameLength: 100)
        let (header, headerLength) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        #expect(header.contentType == .framed)
        let regular = 4 + 12 + 100 + 16, final = 4 + 4 + 12 + 4 + 50 + 16
        #expect(message.count == headerLength + 2 * regular + final)
        let finalStart = headerLength + 2 * regular
        #expect(Array(message[finalStart..<finalStart + 8]) == [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 3])
    }

    @Test func exactMultipleEndsWithAnEmptyFinalFrame() async throws {
        // The Python ESDK refuses a final frame as long as the frame length.
        let message = try await encrypt(randomBytes(200), keyring: try aesKeyring(), frameLength: 100)
        let (_, headerLength) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        #expect(message.count == headerLength + 2 * (4 + 12 + 100 + 16) + (4 + 4 + 12 + 4 + 0 + 16))
    }

    @Test func fullLengthFinalFramesFromOtherWritersAreRead() async throws {
        // Build a message whose final frame is full, as the spec allows, by re-sealing by hand.
        let keyring = try aesKeyring()
        let materials = try await DefaultMaterialsManager(keyring: keyring).encryptionMaterials(
            for: EncryptionMaterialsRequest(encryptionContext: [:], suite: .aes256GCMHKDFSHA512CommitKey))
        let e = try MessageEncryptor(materials: materials, frameLength: 4)
        var message = e.header.bodyBytes + e.header.authTag
        let key = KeyDerivation.contentKey(dataKey: materials.plaintextDataKey!, suite: materials.suite, messageID: e.header.messageID)
        var aad = BodyAAD(messageID: e.header.messageID)
        let iv: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        let sealed = try [UInt8]([1, 2, 3, 4]).withUnsafeBytes { p in
            try aad.with(.finalFrame, sequence: 1, length: 4) { a in try AESGCMContext.seal(key: key, iv: iv, aad: Array(a), plaintext: p) }
        }
        message += [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 1] + iv + [0, 0, 0, 4] + sealed
        #expect(try await decrypt(message, keyring: keyring) == [1, 2, 3, 4])
    }

    @Test func signedMessagesCarryThePublicKeyAndAFixedLengthFooter() async throws {
        let keyring = try aesKeyring()
        for _ in 0..<64 {
            let message = try await encrypt([1], keyring: keyring, suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384)
            let (header, _) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
            #expect(header.encryptionContext.value(forKey: EncryptionContext.publicKeyKey) != nil)
            // As the ESDK writes them: a 2-byte length of 103, then a 103-byte DER signature.
            #expect(Array(message[(message.count - 105)..<(message.count - 103)]) == [0, 103])
            #expect(try await decrypt(message, keyring: keyring) == [1])
        }
    }

    @Test func negatingSIsOrderMinusS() {
        let one = [UInt8](repeating: 0, count: 47) + [1]
        let nMinusOne = MessageSigner.subtract(MessageSigner.order, one[...])
        #expect(nMinusOne.suffix(2) == [0x29, 0x72] && nMinusOne.prefix(47) == MessageSigner.order.prefix(47))
    }

    @Test func streamingDecryptionAcceptsAnyChunking() async throws {
        let keyring = try aesKeyring()
        for suite in Self.suites {
            let plaintext = randomBytes(5000)
            let message = try await encrypt(plaintext, keyring: keyring, suite: suite, frameLength: 256)
            for chunks in [[1], [7, 300, 2], [4096], [message.count]] {
                #expect(try await decryptInChunks(message, keyring: keyring, chunks: chunks) == plaintext)
            }
        }
    }

    @Test func streamingEncryptionAcceptsAnyChunking() async throws {
        let keyring = try aesKeyring()
        let plaintext = randomBytes(3000)
        let message = try await encryptInChunks(plaintext, keyring: keyring, suite: .aes256GCMHKDFSHA512CommitKey,
                                                frameLength: 100, chunks: [0, 1, 99, 100, 101, 1000])
        #expect(try await decrypt(message, keyring: keyring) == plaintext)
    }

    /// Large enough that whole-frame batches are sealed and opened on several threads.
    @Test(arguments: suites, [1000, 4096, 65536])
    func largeMessagesRoundTripThroughParallelBatches(suite: AlgorithmSuite, frame: Int) async throws {
        let keyring = try aesKeyring()
        let plaintext = randomBytes((3 << 20) + 123)
        let message = try await encrypt(plaintext, keyring: keyring, suite: suite, frameLength: frame)
        #expect(try await decrypt(message, keyring: keyring) == plaintext)
        #expect(try await decryptInChunks(message, keyring: keyring, chunks: [300_001, 77, 1 << 20]) == plaintext)
        // Streaming encryption in odd chunks produces a message that decrypts the same way.
        let streamed = try await encryptInChunks(plaintext, keyring: keyring, suite: suite, frameLength: frame,
                                                 chunks: [5, 200_000, 1 << 20, 17])
        #expect(try await decrypt(streamed, keyring: keyring) == plaintext)
    }

    /// The one-shot seal writes what the streaming encryptor writes: same layout, same header but
    /// for the message's own ID, commitment and tag; and it decrypts.
    @Test func oneShotSealMatchesTheStreamingEncryptor() async throws {
        let keyring = try aesKeyring()
        let manager = DefaultMaterialsManager(keyring: keyring)
        await propertyCheck(count: 80, input: Gen.int(in: 0...5000), Gen.int(in: 1...1200)) { size, frame in
            let plaintext = randomBytes(size)
            let materials = try await manager.encryptionMaterials(for: EncryptionMaterialsRequest(
                encryptionContext: ["k": "v", "é": "ü"], suite: .aes256GCMHKDFSHA512CommitKey))
            let (header, body) = try plaintext.withUnsafeBytes { try MessageEncryptor.seal($0, materials: materials, frameLength: frame) }
            let streamed = try await encrypt(plaintext, keyring: keyring, suite: .aes256GCMHKDFSHA512CommitKey, frameLength: frame,
                                             context: ["k": "v", "é": "ü"])
            #expect(header.count + body.count == streamed.count, "size \(size), frame \(frame)")
            let (parsed, length) = try header.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
            let (other, _) = try streamed.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
            #expect(length == header.count)
            #expect(parsed.encryptionContext == other.encryptionContext && parsed.frameLength == other.frameLength
                    && parsed.contentType == other.contentType && parsed.suite == other.suite)
            #expect(try await decrypt(header + body, keyring: keyring) == plaintext)
        }
        let signed = try await manager.encryptionMaterials(for: EncryptionMaterialsRequest(
            encryptionContext: [:], suite: .aes256GCMHKDFSHA512CommitKeyECDSAP384))
        #expect(throws: KeywardCryptoError(.unsupportedAlgorithm, "")) {
            _ = try [UInt8]().withUnsafeBytes { try MessageEncryptor.seal($0, materials: signed) }
        }
    }

    @Test func propertyRoundTrip() async throws {
        let keyring = try aesKeyring()
        await propertyCheck(count: 60, input: Gen.int(in: 0...3000), Gen.int(in: 1...700), Gen.int(in: 1...900), Gen.bool) {
            size, frame, chunk, signed in
            let plaintext = randomBytes(size)
            let suite: AlgorithmSuite = signed ? .aes256GCMHKDFSHA512CommitKeyECDSAP384 : .aes256GCMHKDFSHA512CommitKey
            let message = try await encrypt(plaintext, keyring: keyring, suite: suite, frameLength: frame)
            #expect(try await decryptInChunks(message, keyring: keyring, chunks: [chunk]) == plaintext)
        }
    }
}

/// A positional source over bytes in memory: workers copy their frames out of it. It can be told
/// to fail at a given offset, as a file that shrank would.
private final class MemoryPositionalSource: PositionalByteSource, @unchecked Sendable {
    let bytes: [UInt8]
    let failAt: Int?
    var offset = 0
    /// Calls to `read`, from any worker.
    let reads = Mutex(0)
    init(_ bytes: [UInt8], failAt: Int? = nil) {
        self.bytes = bytes
        self.failAt = failAt
    }
    var remaining: Int { bytes.count - offset }
    func consume(_ count: Int) { offset += count }
    func read(at position: Int, into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) throws {
        reads.withLock { $0 += 1 }
        var at = offset + position
        for b in buffers {
            if let failAt, at + b.count > failAt { throw KeywardCryptoError(.invalidArgument, "shrank") }
            b.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes.withUnsafeBytes { $0 }[at..<at + b.count]))
            at += b.count
        }
    }
    /// 1 MiB at a time, as the file source maps it.
    func nextChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        guard offset < bytes.count else { return false }
        let start = offset, end = min(bytes.count, offset + (1 << 20))
        offset = end
        try bytes.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
        return true
    }
}

@Suite struct PositionalSourceTests {
    private func encrypt(_ source: MemoryPositionalSource, frame: Int, suite: AlgorithmSuite) async throws -> [UInt8] {
        var source = source
        var sink = ArraySink()
        try await Message.encrypt(from: &source, to: &sink, materialsManager: DefaultMaterialsManager(keyring: try aesKeyring()),
                                  context: ["purpose": "test"], suite: suite, frameLength: frame)
        return sink.bytes
    }

    @Test(arguments: RoundTripTests.suites, [100, 4096, 65536])
    func workersReadingTheirFramesRoundTrip(suite: AlgorithmSuite, frame: Int) async throws {
        // Sizes across the 1 MiB batches, the 128 KiB split and the frame boundaries.
        for size in Set([0, frame - 1, frame, 3 * frame + 7, (1 << 20) + frame + 3, (5 << 19) / frame * frame]) {
            let plaintext = randomBytes(size)
            let message = try await encrypt(MemoryPositionalSource(plaintext), frame: frame, suite: suite)
            #expect(try await KeywardCryptoTests.decrypt(message, keyring: try aesKeyring()) == plaintext, "frame \(frame) size \(size)")
        }
    }

    /// Decrypts from a positional source; `batches` tells whether workers read from it.
    private func decryptFromSource(_ message: [UInt8], batches: ((Bool) -> Void)? = nil) async throws -> [UInt8] {
        let source = MemoryPositionalSource(message)
        var lent = source
        var sink = ArraySink()
        try await Message.decrypt(from: &lent, to: &sink, materialsManager: DefaultMaterialsManager(keyring: try aesKeyring()))
        batches?(source.reads.withLock { $0 } > 0)
        return sink.bytes
    }

    @Test(arguments: RoundTripTests.suites, [100, 4096, 65536])
    func decryptingFromAPositionalSourceRoundTrips(suite: AlgorithmSuite, frame: Int) async throws {
        for size in Set([0, 3 * frame + 7, (1 << 20) + frame + 3, (7 << 19) / frame * frame]) {
            let plaintext = randomBytes(size)
            let message = try await KeywardCryptoTests.encrypt(plaintext, keyring: try aesKeyring(), suite: suite, frameLength: frame)
            // Past the first chunk, messages are read by the workers (signed ones too: their hash
            // runs a batch behind, and the signature verifies only if it saw every byte in order).
            let expectBatches = message.count > (1 << 20)
            var batched = false
            let decrypted = try await decryptFromSource(message) { batched = $0 }
            #expect(decrypted == plaintext, "frame \(frame) size \(size)")
            #expect(batched == expectBatches, "frame \(frame) size \(size)")
        }
    }

    @Test(arguments: RoundTripTests.suites)
    func faultsInsideBatchesReadFromTheSourceAreNamed(suite: AlgorithmSuite) async throws {
        let frame = 4096, per = 16 + frame + 16
        let message = try await KeywardCryptoTests.encrypt(randomBytes(3 << 20), keyring: try aesKeyring(), suite: suite, frameLength: frame)
        let (_, headerLength) = try message.withUnsafeBytes { try MessageHeader.parse($0, maxEncryptedDataKeys: nil) }
        // Frame 600 lies in the second batch read from the source (the first chunk ends near 256):
        // for a signed message, the first batch is still waiting to be hashed when it fails.
        var bad = message
        bad[headerLength + 599 * per + 16 + 9] ^= 1
        let e1 = await #expect(throws: KeywardCryptoError.self) { _ = try await decryptFromSource(bad) }
        #expect(e1?.code == .authenticationFailed)
        #expect(e1?.reason.contains("frame 600 ") == true, "\(e1?.reason ?? "")")
        // Two frames swapped in that batch.
        var swapped = message
        let a = headerLength + 599 * per
        swapped.replaceSubrange(a..<a + 2 * per, with: Array(message[a + per..<a + 2 * per]) + Array(message[a..<a + per]))
        let e2 = await #expect(throws: KeywardCryptoError.self) { _ = try await decryptFromSource(swapped) }
        #expect(e2?.code == .malformedMessage)
        // Bytes after the end, more than a batch of them: the final frame comes before the
        // source's end, which the batches must not read past.
        let e3 = await #expect(throws: KeywardCryptoError.self) { _ = try await decryptFromSource(message + randomBytes(2 << 20)) }
        #expect(e3?.code == .trailingBytes)
        // Cut short inside the frames.
        let e4 = await #expect(throws: KeywardCryptoError.self) { _ = try await decryptFromSource(Array(message[..<(message.count - 300_000)])) }
        #expect(e4?.code == .truncatedMessage)
        guard suite.isSigned else { return }
        // The signature of a message read in batches: altered, it is refused; intact, it verifies
        // only if the hash, a batch behind the reading, saw every batch once and in order.
        var forged = message
        forged[forged.count - 1] ^= 1
        let e5 = await #expect(throws: KeywardCryptoError.self) { _ = try await decryptFromSource(forged) }
        #expect(e5?.code == .signatureInvalid)
        #expect(try await decryptFromSource(message).count == 3 << 20)
    }

    @Test func aFailedReadFailsTheMessageWithTheSourcesError() async throws {
        let source = MemoryPositionalSource(randomBytes(3 << 20), failAt: (3 << 20) - 5)
        let error = await #expect(throws: KeywardCryptoError.self) {
            _ = try await encrypt(source, frame: 4096, suite: .aes256GCMHKDFSHA512CommitKey)
        }
        #expect(error?.reason == "shrank")
        // The bytes read before the failure were consumed batch by batch; the failing batch was not.
        #expect(source.offset == 2 << 20)
    }
}
