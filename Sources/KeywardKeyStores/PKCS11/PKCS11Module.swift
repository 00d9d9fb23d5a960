import CPKCS11
import Foundation
import KeywardBlockingIO
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A loaded PKCS#11 module: dlopen'ed once per path, initialised for multi-threaded use, and kept
/// for the life of the process (modules do not take well to being finalised and reloaded).
final class PKCS11Module: @unchecked Sendable {
    // The function list is immutable after C_Initialize; the module does its own locking
    // (CKF_OS_LOCKING_OK).
    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    let path: String

    /// What this process keeps per module path: the threads its calls run on, and the module,
    /// loaded by the first call under the path's own lock. A module that hangs (a C_Initialize or
    /// a call waiting on a network HSM) holds back the calls to it only, not those to others.
    final class Path: Sendable {
        /// At most 8 calls to one module at once (so at most 8 sessions open per token: HSMs limit
        /// them); a pool's threads are kept for the life of the process.
        let calls = BlockingIO(label: "keyward-pkcs11", threads: 8)
        fileprivate let module = Mutex<PKCS11Module?>(nil)
    }

    private static let paths = Mutex<[String: Path]>([:])

    /// The record of the module at `path`, made on first use.
    static func path(_ path: String) -> Path {
        paths.withLock { all in
            if let existing = all[path] { return existing }
            let fresh = Path()
            all[path] = fresh
            return fresh
        }
    }

    static func load(_ path: String) throws -> PKCS11Module {
        try Self.path(path).module.withLock { module in
            if let module { return module }
            let fresh = try PKCS11Module(path: path)
            module = fresh
            return fresh
        }
    }

    private init(path: String) throws {
        self.path = path
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw KeyStoreError(.keyUnavailable, "cannot load the PKCS#11 module \(path)")
        }
        guard let symbol = dlsym(handle, "C_GetFunctionList") else {
            throw KeyStoreError(.keyUnavailable, "\(path) is not a PKCS#11 module (no C_GetFunctionList)")
        }
        let getFunctionList = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        guard getFunctionList(&list) == CKR_OK, let list else {
            throw KeyStoreError(.keyUnavailable, "the PKCS#11 module \(path) gave no function list")
        }
        functions = list
        var args = CK_C_INITIALIZE_ARGS(CreateMutex: nil, DestroyMutex: nil, LockMutex: nil, UnlockMutex: nil,
                                        flags: CKF_OS_LOCKING_OK, pReserved: nil)
        let rv = withUnsafeMutablePointer(to: &args) { list.pointee.C_Initialize!(UnsafeMutableRawPointer($0)) }
        guard rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED else {
            throw KeyStoreError(.keyUnavailable, "the PKCS#11 module \(path) failed to initialise (CKR 0x\(String(rv, radix: 16)))")
        }
    }

    /// The slot holding the token labelled `label`.
    func slot(token label: String) throws -> CK_SLOT_ID {
        var count: CK_ULONG = 0
        try check(functions.pointee.C_GetSlotList!(CK_BBOOL(CK_TRUE), nil, &count), "C_GetSlotList")
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        try check(functions.pointee.C_GetSlotList!(CK_BBOOL(CK_TRUE), &slots, &count), "C_GetSlotList")
        for slot in slots.prefix(Int(count)) {
            var info = CK_TOKEN_INFO()
            guard functions.pointee.C_GetTokenInfo!(slot, &info) == CKR_OK else { continue }
            let padded = withUnsafeBytes(of: &info.label) { Array($0) }
            if String(decoding: padded, as: UTF8.self).trimmingCharacters(in: .whitespaces) == label { return slot }
        }
        throw KeyStoreError(.keyNotFound, "no PKCS#11 token labelled \(label) in \(path)")
    }

    func check(_ rv: CK_RV, _ call: String) throws {
        guard rv != CKR_OK else { return }
        throw Self.error(rv, call)
    }

    /// PKCS#11 return values to our codes; the reason names the call and the value, never a PIN.
    static func error(_ rv: CK_RV, _ call: String) -> KeyStoreError {
        let reason = "\(call) failed with CKR 0x\(String(rv, radix: 16))"
        switch rv {
        case CKR_PIN_INCORRECT, CKR_PIN_LOCKED, CKR_USER_NOT_LOGGED_IN:
            return KeyStoreError(.accessDenied, "the token refused the PIN (\(reason))")
        case CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE:
            return KeyStoreError(.invalidCiphertext, reason)
        case CKR_KEY_FUNCTION_NOT_PERMITTED:
            return KeyStoreError(.keyDisabled, "the key may not encrypt or decrypt now: it is disabled (\(reason))")
        case CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID:
            return KeyStoreError(.keyNotFound, reason)
        case CKR_ATTRIBUTE_READ_ONLY:
            return KeyStoreError(.invalidArgument, "the token does not let this attribute change (\(reason))")
        default:
            return KeyStoreError(.keyUnavailable, reason)
        }
    }
}
