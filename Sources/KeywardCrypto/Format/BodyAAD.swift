/// The additional authenticated data of each frame:
/// `message ID || content string || sequence number (4) || content length (8)`.
struct BodyAAD {
    enum Kind {
        case frame, finalFrame, singleBlock
        var label: [UInt8] {
            switch self {
            case .frame: Array("AWSKMSEncryptionClient Frame".utf8)
            case .finalFrame: Array("AWSKMSEncryptionClient Final Frame".utf8)
            case .singleBlock: Array("AWSKMSEncryptionClient Single Block".utf8)
            }
        }
    }

    private var buffer: [UInt8]
    private let prefixes: [[UInt8]]

    init(messageID: [UInt8]) {
        prefixes = [Kind.frame, .finalFrame, .singleBlock].map { messageID + $0.label }
        buffer = []
        buffer.reserveCapacity(messageID.count + 64)
    }

    /// Calls `body` with the AAD for one frame, built in a buffer reused across frames.
    mutating func with<R>(_ kind: Kind, sequence: UInt32, length: UInt64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        buffer.removeAll(keepingCapacity: true)
        switch kind {
        case .frame: buffer.append(contentsOf: prefixes[0])
        case .finalFrame: buffer.append(contentsOf: prefixes[1])
        case .singleBlock: buffer.append(contentsOf: prefixes[2])
        }
        buffer.appendUInt32(sequence)
        buffer.appendUInt64(length)
        return try buffer.withUnsafeBytes(body)
    }

}

/// Writes the 12-byte IV for a sequence number at `p`.
func writeFrameIV(_ sequence: UInt32, to p: UnsafeMutableRawPointer) {
    p.initializeMemory(as: UInt8.self, repeating: 0, count: 8)
    writeUInt32(sequence, to: p + 8)
}

func writeUInt32(_ v: UInt32, to p: UnsafeMutableRawPointer) {
    p.storeBytes(of: v.bigEndian, as: UInt32.self)
}
