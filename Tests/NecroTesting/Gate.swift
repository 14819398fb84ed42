import Foundation

/// Opens a FIFO a runner waits on (`read line < FIFO`), and writes a line: the runner goes on.
public func release(_ fifo: String) {
    // Waits for a reader for up to a minute: a runner that never came fails its test, not hangs it.
    var gate: Int32 = -1
    for _ in 0..<6000 {
        gate = open(fifo, O_WRONLY | O_NONBLOCK)
        if gate >= 0 || errno != ENXIO { break }
        usleep(10_000)
    }
    guard gate >= 0 else { return }
    _ = write(gate, "x\n", 2)
    close(gate)
}

/// The first line a writer puts into `fifo` (with what came with it), waited for up to a minute:
/// a runner that never came fails its test, not hangs it ("" then).
public func awaitLine(fromFIFO fifo: String) -> String {
    let reader = open(fifo, O_RDONLY | O_NONBLOCK)
    guard reader >= 0 else { return "" }
    defer { close(reader) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    for _ in 0..<12000 {
        let count = read(reader, &buffer, buffer.count)
        if count > 0 {
            bytes += buffer[..<count]
            if bytes.contains(10) { break }
            continue
        }
        if count == 0 && !bytes.isEmpty { break }  // its writer wrote and closed
        usleep(5_000)  // no writer yet (or nothing written yet)
    }
    return String(decoding: bytes, as: UTF8.self)
}
