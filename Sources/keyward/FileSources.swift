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

/// A regular file. Its bulk is read by the workers themselves, whole frames at known offsets on
/// several threads at once (encrypting; decrypting unsigned messages); the rest (a header, the
/// tail, a signed message) is mapped 1 MiB at a time and lent to the frame loop.
final class MappedFileSource: PositionalByteSource {
    private static let window = 1 << 20
    private let fd: Int32
    private let size: Int
    private var offset = 0

    init(fd: Int32, size: Int) {
        self.fd = fd
        self.size = size
    }

    deinit { close(fd) }

    var remaining: Int { size - offset }

    func consume(_ count: Int) { offset += count }

    func read(at position: Int, into buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) throws {
        var at = offset + position
        var next = 0
        while next < buffers.count {
            // One call per 1,024 buffers (IOV_MAX); a short read (the file shrank, or a signal) goes on
            // from where it stopped.
            let group = buffers[next..<min(buffers.count, next + 1024)]
            var vectors = group.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
            let wanted = group.reduce(0) { $0 + $1.count }
            let n = preadv(fd, &vectors, Int32(vectors.count), off_t(at))
            if n == wanted {
                at += n
                next += group.count
                continue
            }
            if n < 0 && errno != EINTR { throw CLIError.io("cannot read the input: \(String(cString: strerror(errno)))") }
            var done = max(0, n)
            for b in group {
                guard done < b.count else { done -= b.count; at += b.count; continue }
                var filled = done
                done = 0
                while filled < b.count {
                    let m = pread(fd, b.baseAddress! + filled, b.count - filled, off_t(at + filled))
                    if m > 0 { filled += m } else if m < 0 && errno == EINTR { continue } else {
                        throw CLIError.io(m == 0 ? "the input ended early: it changed while it was read" : "cannot read the input: \(String(cString: strerror(errno)))")
                    }
                }
                at += b.count
            }
            next += group.count
        }
    }

    func nextChunk(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        guard offset < size else { return false }
        let length = min(Self.window, size - offset)
        // Mappings start on a page: after whole frames were read, the offset may not.
        let skip = offset % Self.page
        guard let p = mmap(nil, skip + length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, off_t(offset - skip)),
              p != MAP_FAILED else {
            throw CLIError.io("cannot map the input: \(String(cString: strerror(errno)))")
        }
        defer { munmap(p, skip + length) }
        offset += length
        try body(UnsafeRawBufferPointer(start: p + skip, count: length))
        return true
    }

    private static let page = Int(sysconf(Int32(_SC_PAGESIZE)))
}
