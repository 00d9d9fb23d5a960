import Foundation
import FuzzSupport
import KeywardStorage

/// The clear metadata stored beside every record, as the database gives it back (JSON): any
/// bytes are a metadata value or an error, and a value read is written and read back as itself.
func fuzz(_ data: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    let bytes = Data(bytes: data, count: count)
    guard let metadata = try? JSONDecoder().decode(RecordMetadata.self, from: bytes) else { return 0 }
    let again = try! JSONDecoder().decode(RecordMetadata.self, from: try! JSONEncoder().encode(metadata))
    precondition(again == metadata, "metadata does not survive being written")
    return 0
}

@_cdecl("fuzz_record_metadata_main")
func entry(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> Int32 {
    runFuzzer(argc, argv) { fuzz($0, $1) }
}
