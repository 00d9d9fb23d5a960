import Dispatch
import FuzzSupport
import KeywardCrypto

/// The ESDK message decoder (format v1 and v2, framed and not, signed and not) on any bytes, fed
/// whole or in pieces: it must refuse what is malformed or not authentic with an error, never trap,
/// and never run out of bounds. Data keys are unwrapped by a raw AES keyring whose key is fixed
/// (0x11 × 32), so that seed messages made with it (scripts/fuzz makes them with `keyward
/// encrypt`) decrypt, and mutations of them reach the frames.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: count)
    guard let first = bytes.first else { return 0 }
    // The first byte says how the message arrives: whole (0), or in pieces of that many bytes.
    let message = UnsafeRawBufferPointer(rebasing: bytes[1...])
    let piece = first == 0 ? max(message.count, 1) : Int(first)
    var decryptor = MessageDecryptor(options: DecryptionOptions(commitmentPolicy: .requireEncryptAllowDecrypt, maxEncryptedDataKeys: 8,
                                                                maxNonFramedContentLength: 1 << 20))
    var released = 0
    do {
        var at = 0
        var begun = false
        while at < message.count {
            let end = min(at + piece, message.count)
            try decryptor.update(UnsafeRawBufferPointer(rebasing: message[at..<end]))
            at = end
            if !begun, let request = decryptor.materialsRequest {
                try decryptor.begin(with: try blocking { try await Fuzz.materials.decryptionMaterials(for: request) })
                begun = true
            }
            decryptor.drain { released += $0.count }
        }
        try decryptor.finish()
        decryptor.drain { released += $0.count }
        precondition(decryptor.isComplete)
    } catch {}
    return 0
}

enum Fuzz {
    static let materials = DefaultMaterialsManager(keyring: try! RawAESKeyring(
        namespace: "keyward-fuzz", name: "k", key: SecretBytes(count: 32) { $0.initializeMemory(as: UInt8.self, repeating: 0x11) }))
}

/// What a task left for the thread that waited for it (written before the semaphore's signal).
final class Outcome<T>: @unchecked Sendable { var value: Result<T, any Error>? }

/// Runs `body` (which never suspends for long: the raw AES keyring does no I/O) to its end.
func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = Outcome<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { outcome.value = .success(try await body()) } catch { outcome.value = .failure(error) }
        done.signal()
    }
    done.wait()
    return try outcome.value!.get()
}

@_cdecl("fuzz_esdk_message_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
