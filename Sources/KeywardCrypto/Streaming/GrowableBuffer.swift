import CKeywardOpenSSL

/// A byte buffer whose tail can be written in place without zero-filling first (unlike `[UInt8]`),
/// reused for the life of a stream. A buffer that may hold plaintext is wiped whole before its
/// memory is freed or moved; between uses it is simply overwritten, since wiping every drain would
/// cost a full extra pass over the data and hide nothing from a process that still holds the key.
/// Public for streams outside this module that hold plaintext (a file upload's batches).
public final class GrowableBuffer {
    private var storage: UnsafeMutableRawPointer
    public private(set) var capacity: Int
    public private(set) var count: Int = 0
    /// The end of the region ever handed out for writing: only it can hold anything to wipe (a
    /// short message's buffer is not wiped over its whole capacity).
    private var touched = 0
    private let holdsSecrets: Bool

    public init(capacity: Int = 64 * 1024, holdsSecrets: Bool) {
        self.capacity = max(capacity, 16)
        self.holdsSecrets = holdsSecrets
        storage = .allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit {
        wipe(storage, touched)
        storage.deallocate()
    }

    private func wipe(_ p: UnsafeMutableRawPointer, _ n: Int) {
        if holdsSecrets { kw_cleanse(p, n) }
    }

    public var isEmpty: Bool { count == 0 }
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: storage, count: count) }

    /// Room for `n` more bytes at the end; write them, then ``commit(_:)``.
    func reserveTail(_ n: Int) -> UnsafeMutableRawPointer {
        if count + n > capacity { grow(to: count + n) }
        touched = max(touched, count + n)
        return storage + count
    }

    func commit(_ n: Int) {
        precondition(count + n <= capacity)
        count += n
    }

    public func append(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        reserveTail(bytes.count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        count += bytes.count
    }

    func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// Drops the first `n` bytes, moving the rest to the front.
    func removeFirst(_ n: Int) {
        precondition(n <= count)
        if n == count { clear(); return }
        (storage).copyMemory(from: storage + n, byteCount: count - n)
        count -= n
    }

    public func clear() {
        count = 0
    }

    private func grow(to needed: Int) {
        var newCapacity = capacity
        while newCapacity < needed { newCapacity *= 2 }
        let new = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        new.copyMemory(from: storage, byteCount: count)
        wipe(storage, touched)
        touched = count
        storage.deallocate()
        storage = new
        capacity = newCapacity
    }
}
