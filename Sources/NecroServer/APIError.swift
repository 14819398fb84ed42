import Foundation
public import Hummingbird
public import NecroCore
import NecroRegistry

/// An error the API answers with: its HTTP status, a code a program can act on, a message a person
/// can, and where it applies (a field of the body, or the places of a spec's problems).
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// The body field at fault, as a path (`priority`, `events[2].event_type`).
    public var field: String?
    /// Located problems, for a spec that does not validate.
    public var issues: [JSONValue]?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, field: String? = nil, issues: [JSONValue]? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.issues = issues
    }

    public var json: JSONValue {
        var error: [String: JSONValue] = ["code": .string(code), "message": .string(message)]
        if let field { error["field"] = .string(field) }
        if let issues { error["issues"] = .array(issues) }
        return .object(["error": .object(error)])
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        JSONResponse.make(json, status: status)
    }

    static func notFound(_ what: String) -> APIError { APIError(.notFound, "not_found", what) }
    static func badRequest(_ message: String, field: String? = nil) -> APIError {
        APIError(.badRequest, "bad_request", message, field: field)
    }

    /// A spec's validation problems, each with its file, line and field.
    static func invalidSpec(_ error: SpecValidationError) -> APIError {
        let issues = error.issues.map(\.json)
        let count = error.issues.count
        return APIError(
            .badRequest, "invalid_spec", "the spec has \(count) problem\(count == 1 ? "" : "s"): \(error.issues.first?.description ?? "")",
            issues: issues)
    }

    /// The registry refused or failed.
    static func registry(_ error: RegistryError) -> APIError {
        switch error.code {
        case .unknownTask, .unknownSpec: return APIError(.notFound, "not_found", error.message)
        case .stateConflict: return APIError(.conflict, "conflict", error.message)
        case .invalidSpec: return APIError(.badRequest, "invalid_spec", error.message)
        default: return APIError(.serviceUnavailable, "registry_unavailable", error.message)
        }
    }
}

/// JSON responses, written by the project's own serializer (sorted keys).
enum JSONResponse {
    static func make(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4096)
        value.write(to: &bytes)
        bytes.append(10)
        return Response(
            status: status, headers: [.contentType: "application/json; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}

/// Answers every error as JSON: the API's own with their status, a route not found as 404, any
/// other as 500 with its description.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return JSONResponse.make(error.json, status: error.status)
        } catch let error as HTTPError {
            let code: String
            switch error.status {
            case .notFound: code = "not_found"
            case .methodNotAllowed: code = "method_not_allowed"
            case .badRequest: code = "bad_request"
            case .unauthorized: code = "unauthorized"
            default: code = "http_\(error.status.code)"
            }
            let message = error.body ?? (error.status == .notFound ? "no route \(request.method) \(request.uri.path)" : error.status.reasonPhrase)
            return JSONResponse.make(APIError(error.status, code, message).json, status: error.status)
        } catch let error as RegistryError {
            let api = APIError.registry(error)
            return JSONResponse.make(api.json, status: api.status)
        } catch {
            return JSONResponse.make(APIError(.internalServerError, "internal", "\(error)").json, status: .internalServerError)
        }
    }
}
