#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension SecretBytes {
    /// Reads a small file (a key, a PIN) straight into secret memory, with no other copy made.
    public convenience init(contentsOfFile path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw KeywardCryptoError(.invalidKey, "cannot open key file \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_size <= 1 << 20 else {
            throw KeywardCryptoError(.invalidKey, "key file \(path) is not a regular file of at most 1 MiB")
        }
        let size = Int(st.st_size)
        try self.init(count: size) { buffer in
            var done = 0
            while done < size {
                let n = read(fd, buffer.baseAddress! + done, size - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw KeywardCryptoError(.invalidKey, "cannot read key file \(path)") }
                done += n
            }
        }
    }
}
