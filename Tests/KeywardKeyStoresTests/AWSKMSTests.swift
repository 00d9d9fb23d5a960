import KeywardBlockingIO
import Foundation
import KeywardCrypto
import KeywardTesting
@testable import KeywardKeyStores
import Testing

/// The AWS KMS store against a moto server started for this suite (moto is the real peer here; the
/// CLI-level KMS tests live in tests/interop/test_aws_kms.py).
@Suite(.serialized) final class AWSKMSTests {
    let moto: MotoPeer
    let store: AWSKMSKeyStore

    init() async throws {
        // moto takes seconds to start: wait off the threads the other tests' tasks run on.
        moto = try await BlockingIO.run { try MotoPeer() }
        store = AWSKMSKeyStore(
            client: AWSKMSClient(credentials: AWSCredentials(accessKeyID: "testing", secretAccessKey: "testing"),
                                 configuration: .init(endpoint: moto.url, timeout: .seconds(20))),
            defaultRegion: "us-east-1")
    }

    func arn(_ description: KeyDescription) -> String { String(description.reference.dropFirst("aws-kms:".count)) }

    @Test func reEncryptMovesADataKeyToAnotherKeyInsideKMS() async throws {
        let a = arn(try await store.createKey(name: "a")), b = arn(try await store.createKey(name: "b"))
        let source: EncryptionContext = ["tenant": "t1"], destination: EncryptionContext = ["tenant": "t1", "moved": "yes"]
        let (plaintext, wrapped) = try await store.generateDataKey(keyID: a, length: 32, context: source)
        #expect(wrapped.keyID == a)
        let moved = try await store.reEncrypt(ciphertext: wrapped.ciphertext, from: a, sourceContext: source, to: b, destinationContext: destination)
        #expect(moved.keyID == b)
        #expect(try await store.decrypt(keyID: b, ciphertext: moved.ciphertext, context: destination).constantTimeEquals(plaintext))
        // Refused: real KMS says IncorrectKeyException (invalid_ciphertext), moto AccessDeniedException.
        await #expect(throws: KeyStoreError.self) {
            _ = try await self.store.decrypt(keyID: a, ciphertext: moved.ciphertext, context: destination)
        }
    }

    @Test func describeReportsStateDatesAndRotation() async throws {
        let key = arn(try await store.createKey(name: "d"))
        var d = try await store.describe(keyID: key)
        #expect(d.state == .enabled && d.created != nil && d.rotationEnabled == false)
        try await store.rotateKey(keyID: key)
        d = try await store.describe(keyID: key)
        #expect(d.rotationEnabled == true)
        let date = try await store.scheduleKeyDeletion(keyID: key, days: 9)
        d = try await store.describe(keyID: key)
        #expect(d.state == .pendingDeletion)
        #expect(abs((d.deletionDate ?? .distantPast).timeIntervalSince(date)) < 2)
    }
}
