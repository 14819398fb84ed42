/// A runner's output as progress displays show it, whatever launched it: its last complete line
/// that is not blank, trimmed, at most 200 characters; a line longer than 4 KB is cut there.
public struct LastOutputLine: Sendable {
    /// The last such line so far ("" before any).
    public private(set) var line = ""
    private var partial: [UInt8] = []

    public init() {}

    /// Takes in more of the output.
    public mutating func take(_ chunk: ArraySlice<UInt8>) {
        for byte in chunk {
            if byte == 10 {
                let text = String(decoding: partial, as: UTF8.self).trimmingSpaces
                if !text.isEmpty { line = String(text.prefix(200)) }
                partial.removeAll(keepingCapacity: true)
            } else if partial.count < 4096 {
                partial.append(byte)
            }
        }
    }
}

/// What a runner's log says at its end when output was over its cap.
public enum RunnerLog {
    public static func droppedNote(dropped: Int, limit: Int) -> String {
        "\n[necro: \(dropped) more bytes of output were not kept: the log is capped at \(limit) bytes]\n"
    }
}
