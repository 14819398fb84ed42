/// File names made from ids (a spec's name, a task's or a runner's id), which may hold anything.
public enum PathComponent {
    /// A name that stays one path component: no `/`, and no leading `.` (so never `..`); `%`
    /// escaped too, so that two ids never make one name.
    public static func safe(_ text: String) -> String {
        if !text.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "/") }) && text.utf8.first != UInt8(ascii: ".") {
            return text  // the usual case, on the dispatcher's loop for every runner: nothing to change
        }
        var safe = ""
        for (index, character) in text.enumerated() {
            switch character {
            case "%": safe += "%25"
            case "/": safe += "%2F"
            case "." where index == 0: safe += "%2E"
            default: safe.append(character)
            }
        }
        return safe
    }
}
