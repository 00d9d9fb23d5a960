import Foundation
import KeywardCrypto
@testable import KeywardKeyStores
import KeywardTesting
import Synchronization
import Testing

/// A settable clock for waiting periods.
final class TestClock: Sendable {
    private let date = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: @Sendable () -> Date { { [self] in self.date.withLock { $0 } } }
    func advance(days: Double) { date.withLock { $0 += days * 86_400 } }
}

func expectStoreError(_ code: KeyStoreError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                      _ body: () async throws -> Void) async {
    await expectError(code, as: KeyStoreError.self, sourceLocation: sourceLocation, body)
}

@Suite struct LocalKeyStoreTests {
    let dir: TemporaryDirectory
    let clock = TestClock()

    init() throws { dir = try TemporaryDirectory(prefix: "keyward-local") }

    func store(_ source: RootKeySource? = nil) throws -> LocalKeyStore {
        try LocalKeyStore(folder: dir.file("store"), rootKey: source ?? .file(dir.file("root.key")), now: clock.now)
    }

    let context: EncryptionContext = ["tenant": "a"]

    @Test func rootKeyFileIsCreatedPrivateAndWrongRootKeysAreRefused() throws {
        _ = try store()
        let attributes = try FileManager.default.attributesOfItem(atPath: dir.file("root.key"))
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect((attributes[.size] as? Int) == 32)
        try Data(repeating: 7, count: 32).write(to: URL(fileURLWithPath: dir.file("other.key")))
        #expect(throws: KeyStoreError(.storeCorrupt, "")) { try store(.file(dir.file("other.key"))) }
        #expect(throws: KeyStoreError(.storeCorrupt, "")) { try store(.passphrase(SecretBytes(copying: Array("pw".utf8)))) }
    }

    /// A write waits for the store's lock (here held by another open file, as another process's
    /// `keyward keys` would hold it) on a blocking pool's thread: the caller's thread, one only
    /// (an event loop in `keyward serve`), runs other work meanwhile.
    @Test(arguments: ["create", "rotate"])
    func aWriteWaitsForTheLockOffTheCallersThread(_ write: String) async throws {
        let s = try store()
        _ = try await s.createKey(name: "existing")
        let other = open(dir.file("store/.lock"), O_RDWR)
        #expect(other >= 0 && flock(other, LOCK_EX) == 0)
        // A backstop: were the caller's thread blocked, nothing on it could release the lock.
        final class Lock: Sendable {
            let fd: Int32, released = Mutex(false)
            init(_ fd: Int32) { self.fd = fd }
            var held: Bool { released.withLock { !$0 } }
            func release() { released.withLock { if !$0 { $0 = true; flock(fd, LOCK_UN) } } }
        }
        let lock = Lock(other)
        let release: @Sendable () -> Void = { lock.release() }
        DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: release)
        let ranMeanwhile = try await withTaskExecutorPreference(OneThread()) {
            async let written: Void = write == "create" ? { _ = try await s.createKey(name: "k") }() : s.rotateKey(keyID: "existing")
            // Once the write has reached the lock: a sleep does not hold the thread, a blocking wait would.
            async let meanwhile: Bool = {
                try? await Task.sleep(for: .milliseconds(300))
                return lock.held
            }()
            let ran = await meanwhile
            release()
            try await written
            return ran
        }
        close(other)
        #expect(ranMeanwhile, "the caller's thread was held while the write waited for the lock")
        #expect(try await s.describe(keyID: write == "create" ? "k" : "existing").versions == (write == "create" ? 1 : 2))
    }

    @Test func passphraseStores() async throws {
        let pass = RootKeySource.passphrase(SecretBytes(copying: Array("correct horse".utf8)))
        let s = try store(pass)
        _ = try await s.createKey(name: "k")
        let (dataKey, wrapped) = try await s.generateDataKey(keyID: "k", length: 32, context: context)
        let reopened = try store(pass)
        #expect(try await reopened.decrypt(keyID: "k", ciphertext: wrapped.ciphertext, context: context).constantTimeEquals(dataKey))
        #expect(throws: KeyStoreError(.storeCorrupt, "")) { try store(.passphrase(SecretBytes(copying: Array("wrong".utf8)))) }
        #expect(!FileManager.default.fileExists(atPath: dir.file("root.key")))
    }

    @Test func lifecycle() async throws {
        let s = try store()
        _ = try await s.createKey(name: "k")
        let (first, wrapped1) = try await s.generateDataKey(keyID: "k", length: 32, context: context)

        try await s.disableKey(keyID: "k")
        await expectStoreError(.keyDisabled) { _ = try await s.decrypt(keyID: "k", ciphertext: wrapped1.ciphertext, context: context) }
        await expectStoreError(.keyDisabled) { _ = try await s.generateDataKey(keyID: "k", length: 32, context: context) }
        try await s.enableKey(keyID: "k")
        #expect(try await s.decrypt(keyID: "k", ciphertext: wrapped1.ciphertext, context: context).constantTimeEquals(first))

        try await s.rotateKey(keyID: "k")
        let (second, wrapped2) = try await s.generateDataKey(keyID: "k", length: 32, context: context)
        #expect(wrapped2.ciphertext[1..<5] == [0, 0, 0, 2])
        #expect(try await s.decrypt(keyID: "k", ciphertext: wrapped1.ciphertext, context: context).constantTimeEquals(first))
        #expect(try await s.decrypt(keyID: "k", ciphertext: wrapped2.ciphertext, context: context).constantTimeEquals(second))
        #expect(try await s.describe(keyID: "k").versions == 2)

        await expectStoreError(.invalidArgument) { _ = try await s.scheduleKeyDeletion(keyID: "k", days: 6) }
        let date = try await s.scheduleKeyDeletion(keyID: "k", days: 7)
        #expect(date == clock.now().addingTimeInterval(7 * 86_400))
        await expectStoreError(.keyPendingDeletion) { _ = try await s.decrypt(keyID: "k", ciphertext: wrapped1.ciphertext, context: context) }
        await expectStoreError(.keyPendingDeletion) { try await s.enableKey(keyID: "k") }
        try await s.cancelKeyDeletion(keyID: "k")
        #expect(try await s.describe(keyID: "k").state == .disabled)
        try await s.enableKey(keyID: "k")
        #expect(try await s.decrypt(keyID: "k", ciphertext: wrapped2.ciphertext, context: context).constantTimeEquals(second))
    }

    @Test func keysAreDestroyedAfterTheWaitingPeriod() async throws {
        let s = try store()
        _ = try await s.createKey(name: "k")
        let (_, wrapped) = try await s.generateDataKey(keyID: "k", length: 32, context: context)
        _ = try await s.scheduleKeyDeletion(keyID: "k", days: 30)
        clock.advance(days: 29.9)
        await expectStoreError(.keyPendingDeletion) { _ = try await s.decrypt(keyID: "k", ciphertext: wrapped.ciphertext, context: context) }
        clock.advance(days: 0.2)
        await expectStoreError(.keyDestroyed) { _ = try await s.decrypt(keyID: "k", ciphertext: wrapped.ciphertext, context: context) }
        await expectStoreError(.keyDestroyed) { try await s.cancelKeyDeletion(keyID: "k") }
        let file = try String(contentsOfFile: dir.file("store/keys/k.json"), encoding: .utf8)
        #expect(!file.contains("material"), "destroyed keys keep no material")
        #expect(try await s.describe(keyID: "k").state == .destroyed)
    }

    @Test func wrappedKeysAreBoundToContextKeyAndVersion() async throws {
        let s = try store()
        _ = try await s.createKey(name: "a")
        _ = try await s.createKey(name: "b")
        let (_, wrapped) = try await s.generateDataKey(keyID: "a", length: 32, context: context)
        await expectStoreError(.invalidCiphertext) { _ = try await s.decrypt(keyID: "a", ciphertext: wrapped.ciphertext, context: ["tenant": "b"]) }
        await expectStoreError(.invalidCiphertext) { _ = try await s.decrypt(keyID: "b", ciphertext: wrapped.ciphertext, context: context) }
        var otherVersion = wrapped.ciphertext
        otherVersion[4] = 9
        await expectStoreError(.invalidCiphertext) { _ = try await s.decrypt(keyID: "a", ciphertext: otherVersion, context: context) }
        await expectStoreError(.keyNotFound) { _ = try await s.decrypt(keyID: "c", ciphertext: wrapped.ciphertext, context: context) }
        await expectStoreError(.invalidArgument) { _ = try await s.createKey(name: "../escape") }
        await expectStoreError(.alreadyExists) { _ = try await s.createKey(name: "a") }
    }

    @Test func materialMovedBetweenKeysIsRefused() async throws {
        let s = try store()
        _ = try await s.createKey(name: "a")
        _ = try await s.createKey(name: "b")
        // Put key a's sealed material into key b's file: the AAD (name, version) no longer matches.
        let a = try String(contentsOfFile: dir.file("store/keys/a.json"), encoding: .utf8)
        let b = try String(contentsOfFile: dir.file("store/keys/b.json"), encoding: .utf8)
        func material(_ s: String) -> String { s.components(separatedBy: "\"material\" : \"")[1].components(separatedBy: "\"")[0] }
        try b.replacingOccurrences(of: material(b), with: material(a)).write(toFile: dir.file("store/keys/b.json"), atomically: true, encoding: .utf8)
        await expectStoreError(.storeCorrupt) { _ = try await s.generateDataKey(keyID: "b", length: 32, context: context) }
    }

    @Test func anotherInstanceSeesChangesAtOnce() async throws {
        let one = try store(), two = try store()
        _ = try await one.createKey(name: "k")
        let (_, wrapped) = try await two.generateDataKey(keyID: "k", length: 32, context: context)
        try await one.disableKey(keyID: "k")
        await expectStoreError(.keyDisabled) { _ = try await two.decrypt(keyID: "k", ciphertext: wrapped.ciphertext, context: context) }
        try await one.enableKey(keyID: "k")
        _ = try await two.decrypt(keyID: "k", ciphertext: wrapped.ciphertext, context: context)
    }

    @Test func concurrentRotationsLoseNoVersion() async throws {
        let s = try store(), t = try store()
        _ = try await s.createKey(name: "k")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<40 {
                let target = i.isMultiple(of: 2) ? s : t
                group.addTask { try await target.rotateKey(keyID: "k") }
            }
            try await group.waitForAll()
        }
        #expect(try await s.describe(keyID: "k").versions == 41)
    }

    @Test func keyringAdapterRoundTripsMessagesAndReportsRevocation() async throws {
        let s = try store()
        _ = try await s.createKey(name: "k")
        let keyring = KeyStoreKeyring(store: s, keyID: "k")
        let manager = DefaultMaterialsManager(keyring: keyring)
        let message = try await Message.encrypt(Array("hi".utf8), materialsManager: manager, context: context)
        let (header, _) = try message.withUnsafeBytes { try MessageHeader.parse(prefixOf: $0) }
        #expect(header.encryptedDataKeys[0].providerIDString == "keyward-local")
        #expect(header.encryptedDataKeys[0].providerInfo == Array("k".utf8))
        #expect(try await Message.decrypt(message, materialsManager: manager).plaintext == Array("hi".utf8))
        try await s.disableKey(keyID: "k")
        await expectStoreError(.keyDisabled) { _ = try await Message.decrypt(message, materialsManager: manager) }
    }

    @Test func listAndDescribe() async throws {
        let s = try store()
        for name in ["b", "a"] { _ = try await s.createKey(name: name) }
        #expect(try await s.listKeys().map(\.reference) == ["local:a", "local:b"])
        #expect(try await s.describe(keyID: "a").state == .enabled)
    }
}

@Suite struct KeyReferenceTests {
    @Test func parsesEachScheme() throws {
        #expect(try KeyReference.parse("local:tenant-a") == KeyReference(scheme: "local", keyID: "tenant-a"))
        let arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        #expect(try KeyReference.parse("aws-kms:\(arn)").keyID == arn)
        #expect(try KeyReference.awsRegion(ofARN: arn) == "eu-west-1")
        #expect(try KeyReference.parse("pkcs11:token=t;object=o?module-path=/m.so").scheme == "pkcs11")
        for bad in ["local:", "local:a/b", "aws-kms:not-an-arn", "aws-kms:arn:aws:s3:::bucket", "nope:x", "raw-aes:x"] {
            #expect(throws: KeyStoreError.self, "\(bad)") { try KeyReference.parse(bad) }
        }
    }
}
