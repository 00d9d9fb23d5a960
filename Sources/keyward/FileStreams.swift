#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import KeywardCrypto

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

/// An output that appears under its name only when complete. Bytes go to an unnamed file
/// (`O_TMPFILE`) in the same folder, so a crash or `kill -9` leaves nothing behind; ``commit()``
/// fsyncs it, links it under a temporary name and renames that over OUT. Where the file system has
/// no `O_TMPFILE`, a named temporary file is used and removed on failure.
/// `-` writes standard output directly, and so does an existing path that is not a regular file
/// (a device or a pipe cannot be replaced by a rename, and must not be).
final class AtomicOutput {
    let sink: FileDescriptorSink
    private let finalPath: String?
    private let folder: String
    private let base: String
    /// Set while a named temporary file exists that must be removed if we do not commit.
    private var namedTemporary: String?
    private var committed = false

    init(path: String) throws {
        let slash = path.lastIndex(of: "/")
        folder = slash.map { String(path[...$0]) } ?? ""
        base = slash.map { String(path[path.index(after: $0)...]) } ?? path
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
        finalPath = path
        let fd = open(folder.isEmpty ? "." : folder, Self.oTmpfile | O_WRONLY | O_CLOEXEC, 0o600)
        if fd >= 0 {
            sink = FileDescriptorSink(fd: fd)
            return
        }
        var template = Array("\(folder).\(base).keyward-XXXXXX".utf8CString)
        let named = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard named >= 0 else { throw CLIError.io("cannot create a file next to \(path): \(String(cString: strerror(errno)))") }
        sink = FileDescriptorSink(fd: named)
        namedTemporary = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    // O_TMPFILE is a macro Swift does not import: __O_TMPFILE | O_DIRECTORY.
    private static let oTmpfile: Int32 = 0o20000000 | O_DIRECTORY

    /// Makes the output visible under its name.
    func commit() throws {
        guard let finalPath else { return }
        guard fsync(sink.fd) == 0 else { throw CLIError.io("cannot flush \(finalPath): \(String(cString: strerror(errno)))") }
        if namedTemporary == nil {
            // Give the unnamed file a name next to its destination, then rename it into place.
            for attempt in 0..<100 {
                let name = "\(folder).\(base).keyward-\(getpid())-\(attempt)"
                if linkat(AT_FDCWD, "/proc/self/fd/\(sink.fd)", AT_FDCWD, name, AT_SYMLINK_FOLLOW) == 0 {
                    namedTemporary = name
                    break
                }
                guard errno == EEXIST else { throw CLIError.io("cannot create \(finalPath): \(String(cString: strerror(errno)))") }
            }
        }
        guard let temporary = namedTemporary, rename(temporary, finalPath) == 0 else {
            throw CLIError.io("cannot create \(finalPath): \(String(cString: strerror(errno)))")
        }
        namedTemporary = nil
        committed = true
        close(sink.fd)
    }

    deinit {
        guard !committed, finalPath != nil else { return }
        close(sink.fd)
        if let namedTemporary { unlink(namedTemporary) }
    }
}
