/// FNV-1a, 64 bits: a fast hash with no key, for bytes that are not chosen to collide (task ids
/// in a lookup table, a runner's id in its status record). Stable across runs and versions.
public enum FNV1a {
    @inlinable
    public static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return hash
    }
}
