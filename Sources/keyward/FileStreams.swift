#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KeywardCrypto

/// Reads a file descriptor (a file or standard input).
struct FileDescriptorSource: ByteSource {
    let fd: Int32

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR { throw CLIError.io("cannot read the input: \(String(cString: strerror(errno)))") }
        }
    }

    static func open(_ path: String) throws -> FileDescriptorSource {
        if path == "-" { return FileDescriptorSource(fd: STDIN_FILENO) }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CLIError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        return FileDescriptorSource(fd: fd)
    }
}

/// Writes a file descriptor, retrying short writes.
struct FileDescriptorSink: ByteSink {
    let fd: Int32

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw CLIError.io("cannot write the output: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}

/// An output that appears under its name only when complete: bytes go to a temporary file in the
/// same folder, which is fsynced and renamed over OUT on ``commit()`` and removed otherwise.
/// `-` writes standard output directly, and so does an existing path that is not a regular file
/// (a device or a pipe cannot be replaced by a rename, and must not be).
final class AtomicOutput {
    let sink: FileDescriptorSink
    private let finalPath: String?
    private var temporaryPath: String?

    init(path: String) throws {
        guard path != "-" else {
            sink = FileDescriptorSink(fd: STDOUT_FILENO)
            finalPath = nil
            return
        }
        var st = stat()
        if stat(path, &st) == 0 && (st.st_mode & S_IFMT) != S_IFREG {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw CLIError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
            sink = FileDescriptorSink(fd: fd)
            finalPath = nil
            return
        }
        let slash = path.lastIndex(of: "/")
        let folder = slash.map { String(path[...$0]) } ?? ""
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        var template = Array("\(folder).\(base).keyward-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw CLIError.io("cannot create a file next to \(path): \(String(cString: strerror(errno)))") }
        sink = FileDescriptorSink(fd: fd)
        finalPath = path
        temporaryPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    /// Makes the output visible under its name.
    func commit() throws {
        guard let finalPath, let temporaryPath else { return }
        guard fsync(sink.fd) == 0, close(sink.fd) == 0 else {
            throw CLIError.io("cannot flush \(finalPath): \(String(cString: strerror(errno)))")
        }
        guard rename(temporaryPath, finalPath) == 0 else {
            throw CLIError.io("cannot create \(finalPath): \(String(cString: strerror(errno)))")
        }
        self.temporaryPath = nil
    }

    deinit {
        // Not committed: leave nothing behind.
        if let temporaryPath {
            close(sink.fd)
            unlink(temporaryPath)
        }
    }
}
