import FuzzSupport
import KeywardCrypto
import KeywardKeyStores

/// The key references tenants and commands name keys by (`local:`, `aws-kms:`, `pkcs11:`,
/// `vault-transit:`, `kmip:`), PKCS#11 URIs (RFC 7512, percent-encoding included) and the raw
/// keyrings' wrapping-key specs: any text is a value or an error, and a reference parsed prints as
/// a reference that parses to the same.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: count), as: UTF8.self)
    if let reference = KeyReference(parsing: text) {
        precondition(KeyReference(parsing: reference.description) == reference, "a reference does not read back as itself")
    }
    _ = try? PKCS11URI(text)
    // `key=@FILE` would read files: only keys given inline.
    if !text.contains("@") { _ = try? WrappingKeySpec.keyring(from: text) }
    return 0
}

@_cdecl("fuzz_key_references_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
