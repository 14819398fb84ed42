import GRDB
import GRDBSQLite

/// Binds arguments straight through SQLite's C API, and steps the statement once.
///
/// For the statements the dispatcher's loop runs for every event and state change (an event's
/// insert, a task's update, a runner's row): GRDB's general argument handling, with each value
/// boxed, cost as much as SQLite's own work there. Values are bound in the order of the `?`s.
struct BoundStatement {
    private let statement: Statement
    private let handle: OpaquePointer
    private var index: Int32 = 1

    init(_ statement: Statement) {
        self.statement = statement
        self.handle = statement.sqliteStatement
    }

    /// SQLite copies the text: it need not outlive the call.
    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    mutating func bind(_ text: String) {
        var text = text
        text.withUTF8 { bytes in
            _ = sqlite3_bind_text(handle, index, bytes.baseAddress, Int32(bytes.count), Self.transient)
        }
        index += 1
    }

    mutating func bind(_ text: String?) {
        if let text { bind(text) } else { bindNull() }
    }

    mutating func bind(_ value: Int64) {
        _ = sqlite3_bind_int64(handle, index, value)
        index += 1
    }

    mutating func bind(_ value: Int) { bind(Int64(value)) }

    mutating func bind(_ value: Int?) {
        if let value { bind(Int64(value)) } else { bindNull() }
    }

    mutating func bind(_ value: Double) {
        _ = sqlite3_bind_double(handle, index, value)
        index += 1
    }

    mutating func bind(_ value: Double?) {
        if let value { bind(value) } else { bindNull() }
    }

    mutating func bindNull() {
        _ = sqlite3_bind_null(handle, index)
        index += 1
    }

    /// Runs the statement (one step: an insert or update) and resets it for its next use; a
    /// failure is thrown as GRDB would throw it, with its extended result code.
    func execute(in db: Database) throws {
        defer {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
        let code = sqlite3_step(handle)
        guard code == SQLITE_DONE || code == SQLITE_ROW else {
            let extended = sqlite3_extended_errcode(db.sqliteConnection)
            throw DatabaseError(
                resultCode: ResultCode(rawValue: extended), message: String(cString: sqlite3_errmsg(db.sqliteConnection)),
                sql: statement.sql)
        }
    }
}
