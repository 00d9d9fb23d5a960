import CPKCS11
import Foundation
@testable import KeywardKeyStores
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

    @Test func nextVersionIDs() {
        #expect(PKCS11Session.next([1]) == [2])
        #expect(PKCS11Session.next([0xFF]) == [1, 0])
        #expect(PKCS11Session.next([0, 7]) == [0, 8])
    }
}
