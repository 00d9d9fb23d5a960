#if canImport(Glibc)
import Glibc
#endif
import KeywardCrypto

/// Opens the input: a regular file is memory-mapped a window at a time (no copy out of the page
/// cache, and resident memory bounded by the window); anything else (standard input, a pipe) is read.
func openInput(_ path: String) throws -> any ByteSource {
    guard path != "-" else { return ReadingSource(fd: STDIN_FILENO) }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw CLIError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
    var st = stat()
    if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG {
        return MappedFileSource(fd: fd, size: Int(st.st_size))
    }
    return ReadingSource(fd: fd)
}

/// Reads a descriptor into a reused buffer.
final class ReadingSource: ByteSource {
    private let fd: Int32
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)

    init(fd: Int32) { self.fd = fd }

    deinit {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        buffer.deallocate()
    }

    func nextChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        while true {
            let n = read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                try body(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                return true
            }
            if n == 0 { return false }
            if errno != EINTR { throw CLIError.io("cannot read the input: \(String(cString: strerror(errno)))") }
        }
    }
}

/// Maps a regular file 1 MiB at a time and lends each window to the frame loop.
final class MappedFileSource: ByteSource {
    private static let window = 1 << 20
    private let fd: Int32
    private let size: Int
    private var offset = 0

    init(fd: Int32, size: Int) {
        self.fd = fd
        self.size = size
    }

    deinit { close(fd) }

    func nextChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        guard offset < size else { return false }
        let length = min(Self.window, size - offset)
        guard let p = mmap(nil, length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, off_t(offset)),
              p != MAP_FAILED else {
            throw CLIError.io("cannot map the input: \(String(cString: strerror(errno)))")
        }
        defer { munmap(p, length) }
        offset += length
        try body(UnsafeRawBufferPointer(start: p, count: length))
        return true
    }
}
