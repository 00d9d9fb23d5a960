import CPKCS11
import Foundation
@testable import KeywardKeyStores
import KeywardTesting
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct PKCS11Tests {
    static let softHSM = "/usr/lib/softhsm/libsofthsm2.so"

    /// Our Cryptoki header is written by hand from the specification: every function-list entry we
    /// call must be the module's own export of that name, which a misplaced field would break.
    @Test func functionListLayoutMatchesTheModulesExports() throws {
        guard FileManager.default.fileExists(atPath: Self.softHSM) else {
            Issue.record("SoftHSM2 is not installed (scripts/test installs it)")
            return
        }
        let module = try PKCS11Module.load(Self.softHSM)
        let handle = dlopen(Self.softHSM, RTLD_NOW | RTLD_NOLOAD)
        let f = module.functions.pointee
        // C function pointers are plain pointers: compare the table entry with the exported symbol.
        func same<F>(_ pointer: F?, _ name: String) -> Bool {
            guard let symbol = dlsym(handle, name) else { return false }
            return unsafeBitCast(pointer, to: UnsafeRawPointer?.self) == UnsafeRawPointer(symbol)
        }
        #expect(same(f.C_Initialize, "C_Initialize"))
        #expect(same(f.C_GetSlotList, "C_GetSlotList"))
        #expect(same(f.C_GetTokenInfo, "C_GetTokenInfo"))
        #expect(same(f.C_OpenSession, "C_OpenSession"))
        #expect(same(f.C_Login, "C_Login"))
        #expect(same(f.C_GetAttributeValue, "C_GetAttributeValue"))
        #expect(same(f.C_SetAttributeValue, "C_SetAttributeValue"))
        #expect(same(f.C_FindObjectsInit, "C_FindObjectsInit"))
        #expect(same(f.C_FindObjects, "C_FindObjects"))
        #expect(same(f.C_FindObjectsFinal, "C_FindObjectsFinal"))
        #expect(same(f.C_EncryptInit, "C_EncryptInit"))
        #expect(same(f.C_Encrypt, "C_Encrypt"))
        #expect(same(f.C_DecryptInit, "C_DecryptInit"))
        #expect(same(f.C_Decrypt, "C_Decrypt"))
        #expect(same(f.C_GenerateKey, "C_GenerateKey"))
        #expect(same(f.C_WaitForSlotEvent, "C_WaitForSlotEvent"), "the last entry: the whole table lines up")
    }

    @Test func urisParseAndNeverPrintThePIN() throws {
        let uri = try PKCS11URI("token=My%20Token;object=k;id=%01%02?module-path=/m.so&pin-value=s3cret")
        #expect(uri.token == "My Token" && uri.object == "k" && uri.id == [1, 2] && uri.modulePath == "/m.so")
        #expect(uri.identity == "token=My%20Token;object=k;id=%01%02")
        let keyring = KeyStoreKeyring(store: PKCS11KeyStore(), keyID: "token=t;object=k?module-path=/m.so&pin-value=s3cret")
        var dumped = ""
        dump(uri, to: &dumped)
        for text in ["\(uri)", String(reflecting: uri), "\(keyring)", dumped] { #expect(!text.contains("s3cret")) }
        #expect("\(keyring)" == "pkcs11:token=t;object=k")
        #expect(throws: KeyStoreError.self) { try PKCS11URI("object=k?module-path=/m.so") }
        #expect(throws: KeyStoreError.self) { try PKCS11URI("token=t;object=k;id=%G1?module-path=/m.so") }
    }

    /// A reference with `pin-value=` holds a secret (the gateway refuses to keep one); with
    /// `pin-source=`, or an attribute that only looks alike, it does not.
    @Test func aReferenceWithAPINValueHoldsASecret() throws {
        for (text, holds) in [("pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234", true),
                              ("pkcs11:token=t;object=k?pin-value=1234&module-path=/m.so", true),
                              ("pkcs11:token=t;object=k?module-path=/m.so&pin-value", true),
                              ("pkcs11:token=t;object=k?module-path=/m.so&pin-source=/etc/pin", false),
                              ("pkcs11:token=t;object=pin-value?module-path=/m.so", false),
                              ("pkcs11:token=t;object=k?module-path=/pin-value=1/m.so", false),
                              ("local:pin-value", false), ("vault-transit:k?mount=pin-value", false)] {
            #expect(try #require(KeyReference(parsing: text)).holdsSecret == holds, "\(text)")
        }
    }

    @Test func nextVersionIDs() {
        #expect(PKCS11Session.next([1]) == [2])
        #expect(PKCS11Session.next([0xFF]) == [1, 0])
        #expect(PKCS11Session.next([0, 7]) == [0, 8])
    }
}

/// A token that does not answer: OpenSC's `pkcs11-spy` module in front of SoftHSM2, logging to a
/// FIFO that nobody reads, blocks in loading (its log's open waits for a reader), as a network
/// HSM's client blocks on a token that is gone. A call fails with `keyUnavailable` at the store's
/// deadline instead of holding its request for ever, another module answers meanwhile, and once
/// the module answers, calls do again. `scripts/test` sets the spy's variables (PKCS11SPY,
/// PKCS11SPY_OUTPUT) before the tests start: set while other tests run, a `setenv` can race their
/// `getenv`. Run alone, the test sets them itself.
@Suite struct PKCS11DeadlineTests {
    @Test(.timeLimit(.minutes(2)))
    func aTokenThatDoesNotAnswerFailsTheCallAtTheDeadline() async throws {
        guard let spy = ["x86_64", "aarch64"].map({ "/usr/lib/\($0)-linux-gnu/pkcs11/pkcs11-spy.so" })
            .first(where: FileManager.default.fileExists(atPath:)), FileManager.default.fileExists(atPath: PKCS11Tests.softHSM) else {
            Issue.record("OpenSC's pkcs11-spy and SoftHSM2 are not installed (scripts/test installs them)")
            return
        }
        let dir = try TemporaryDirectory(prefix: "keyward-pkcs11-deadline")
        let env = ProcessInfo.processInfo.environment
        let fifo = env["PKCS11SPY_OUTPUT"] ?? dir.file("spy.log")
        if env["PKCS11SPY_OUTPUT"] == nil {
            setenv("PKCS11SPY", PKCS11Tests.softHSM, 1)
            setenv("PKCS11SPY_OUTPUT", fifo, 1)
        }
        #expect(env["PKCS11SPY"].map { $0 == PKCS11Tests.softHSM } ?? true)
        unlink(fifo)
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }  // the spy's descriptor stays open, and read
        let store = PKCS11KeyStore(timeout: .milliseconds(300))
        let key = "token=absent;object=k?module-path=\(spy)&pin-value=s3cret"
        let clock = ContinuousClock(), start = clock.now
        do {
            _ = try await store.describe(keyID: key)
            Issue.record("a module that never loaded answered")
        } catch let e as KeyStoreError {
            #expect(e.code == .keyUnavailable && e.reason.contains("did not answer"), "\(e)")
            #expect(!e.reason.contains("s3cret"))
        }
        // Generous (two busy cores); without the deadline the call never returns.
        #expect(clock.now - start < .seconds(20))
        // Meanwhile another module answers (a store with a deadline a loaded machine cannot miss):
        // the hung module holds back the calls to it only.
        let direct = "token=absent;object=k?module-path=\(PKCS11Tests.softHSM)&pin-value=s3cret"
        do {
            _ = try await PKCS11KeyStore(timeout: .seconds(30)).describe(keyID: direct)
            Issue.record("SoftHSM2 has no token labelled absent")
        } catch let e as KeyStoreError {
            #expect(!e.reason.contains("did not answer"), "\(e)")
        }
        // The module answers once its log has a reader, kept reading (the spy logs every call). The
        // reader opens without waiting for a writer, should the first call not have reached the spy.
        let reader = open(fifo, O_RDONLY | O_NONBLOCK)
        #expect(reader >= 0)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true { if read(reader, &buffer, buffer.count) <= 0 { usleep(10_000) } }
        }
        var answered: KeyStoreError?
        for _ in 0..<100 where answered == nil {
            do { _ = try await store.describe(keyID: key) } catch let e as KeyStoreError where !e.reason.contains("did not answer") {
                answered = e
            } catch {}
        }
        // SoftHSM2 has no token of that label (its error, whichever configuration it read): an answer.
        #expect(answered != nil, "the module never answered after its log got a reader")
    }
}
