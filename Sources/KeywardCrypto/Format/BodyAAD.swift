/// The additional authenticated data of each frame:
/// `message ID || content string || sequence number (4) || content length (8)`.
struct BodyAAD {
    enum Kind {
        case frame, finalFrame, singleBlock
        var label: [UInt8] {
            switch self {
            case .frame: Self.frameLabel
            case .finalFrame: Self.finalFrameLabel
            case .singleBlock: Self.singleBlockLabel
            }
        }
        private static let frameLabel = Array("AWSKMSEncryptionClient Frame".utf8)
        private static let finalFrameLabel = Array("AWSKMSEncryptionClient Final Frame".utf8)
        private static let singleBlockLabel = Array("AWSKMSEncryptionClient Single Block".utf8)
    }

    // One buffer per kind, holding `message ID || label` and 12 bytes that each frame overwrites:
    // per frame only the sequence number and length change.
    private var buffers: [[UInt8]]

    init(messageID: [UInt8]) {
        buffers = [Kind.frame, .finalFrame, .singleBlock].map { messageID + $0.label + [UInt8](repeating: 0, count: 12) }
    }

    /// Calls `body` with the AAD for one frame.
    mutating func with<R>(_ kind: Kind, sequence: UInt32, length: UInt64, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        let index = switch kind { case .frame: 0; case .finalFrame: 1; case .singleBlock: 2 }
        return try buffers[index].withUnsafeMutableBytes { b in
            let tail = b.baseAddress! + (b.count - 12)
            tail.storeBytes(of: sequence.bigEndian, as: UInt32.self)
            (tail + 4).storeBytes(of: length.bigEndian, as: UInt64.self)
            return try body(UnsafeRawBufferPointer(b))
        }
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
