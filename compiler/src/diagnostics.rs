//! Errors and warnings of every stage. A `Diag` is plain data (code, severity, message,
//! labelled spans, help); `render` turns it into a miette report for people, `json` into the
//! machine format of `gw-check --format json`. Codes come from one registry (`Code`): a code,
//! once published, is never reused for another meaning.

use std::fmt;

use miette::LabeledSpan;
use serde::Serialize;

use crate::excerpt::Excerpt;
use crate::source::{Sources, Span};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
    /// A failure after validation: the compiler's fault, never the policy author's.
    Bug,
}

macro_rules! codes {
    ($( $variant:ident = $code:literal, $summary:literal; )*) => {
        /// The registry of diagnostic codes. Add at the end; never rename or reuse one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $( $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            pub fn as_str(self) -> &'static str {
                match self { $( Code::$variant => $code, )* }
            }

            /// One line on what the code means, for `gw-check --explain-code` and the docs.
            pub fn summary(self) -> &'static str {
                match self { $( Code::$variant => $summary, )* }
            }
        }
    };
}

codes! {
    SyntaxUnexpected = "gw::syntax::unexpected", "the parser found a token where it expected something else";
    SyntaxUnknownItem = "gw::syntax::unknown_item", "a top-level item that is not a known declaration";
    SyntaxUnknownStatement = "gw::syntax::unknown_statement", "a statement that does not exist in this block";
    SyntaxBadStatement = "gw::syntax::bad_statement", "a known statement written in a wrong form";
    SyntaxTooDeep = "gw::syntax::too_deep", "brackets or blocks nested deeper than the compiler allows";
    SyntaxTooLong = "gw::syntax::too_long", "an expression with more operands than the compiler allows";
    SyntaxNumber = "gw::syntax::number", "a number or quantity that does not fit or is malformed";
    SyntaxFact = "gw::syntax::fact", "a request fact accessed the wrong way (e.g. `header` without a name)";
    SyntaxAssign = "gw::syntax::assign", "`=` used in an expression where `==` was meant";
    InvalidUtf8 = "gw::io::invalid_utf8", "a policy file that is not valid UTF-8";
    FileUnreadable = "gw::io::unreadable", "a policy file that cannot be read";
    ImportMissing = "gw::import::missing", "an imported file that does not exist";
    ImportCycle = "gw::import::cycle", "files that import each other in a cycle";
    Duplicate = "gw::duplicate_definition", "two definitions of the same kind with one name";
    DuplicateSetting = "gw::duplicate_setting", "a setting given twice in one block";
    DuplicateGateway = "gw::duplicate_gateway", "more than one `gateway` block in a policy";
    UndefinedUpstream = "gw::undefined_upstream", "`to` names an upstream that is not defined";
    UndefinedKeys = "gw::undefined_keys", "`auth` names a key set that is not defined";
    UndefinedMatcher = "gw::undefined_matcher", "an expression names a matcher that is not defined";
    UndefinedName = "gw::undefined_name", "a test expects a route, upstream or tenant that is not defined";
    MatcherCycle = "gw::matcher_cycle", "matchers that refer to each other in a cycle";
    Unused = "gw::unused_definition", "a definition nothing refers to";
    TypeMismatch = "gw::type_mismatch", "an operator applied to values of the wrong type";
    RegexInvalid = "gw::regex_invalid", "a regular expression that does not compile";
    RegexTooLarge = "gw::regex_too_large", "a regular expression whose compiled form is too large";
    OutOfRange = "gw::out_of_range", "a value outside the range the setting accepts";
    InvalidStatus = "gw::invalid_status", "an HTTP status code that cannot be used there";
    InvalidPathPattern = "gw::invalid_path_pattern", "a route path pattern that is malformed";
    InvalidUrl = "gw::invalid_url", "an upstream target or address that is not a valid URL";
    InvalidHeaderName = "gw::invalid_header_name", "a header name that is not a valid HTTP token";
    RouteShadowed = "gw::route_shadowed", "a route that can never match because an earlier route always matches first";
    GuardContradiction = "gw::guard_contradiction", "guards that together refuse every request, or a guard that never applies";
    RouteMissingWhen = "gw::route_missing_when", "a route without a `when` clause";
    RouteMissingAction = "gw::route_missing_action", "a route with no `to`, `respond` or `serve`";
    RouteConflictingActions = "gw::route_conflicting_actions", "a route with more than one action or clause that must be unique";
    FactUnavailable = "gw::fact_unavailable", "a fact used where it is not yet known (e.g. `tenant` before `auth`)";
    EnvUnset = "gw::env_unset", "an `env(...)` variable that is not set";
    KeysFileMissing = "gw::keys_file_missing", "a key file that cannot be read";
    KeysFileMalformed = "gw::keys_file_malformed", "a line of a key file that is not `<sha256-hex> <tenant> <key-name>`";
    TestInvalid = "gw::test_invalid", "a test block that cannot run as written";
    TestFailed = "gw::test_failed", "a policy test whose expectation did not hold";
    NoRoutes = "gw::no_routes", "a policy to serve that has no route (an empty or truncated file)";
    Bug = "gw::bug", "an internal compiler error: please report it";
    AuthUnspecified = "gw::auth_unspecified", "a route that forwards to an upstream without `auth KEYSET` or `auth none`";
    UnknownIdentity = "gw::unknown_identity", "a comparison with a tenant or key name that no key file or `tenant` block names";
    StartupUnavailable = "gw::startup", "a file `gw serve` reads at start that is missing or unusable (the TLS certificate or key)";
    SyntaxOperator = "gw::syntax::operator", "`&&`, `||` or `!` where gw writes `and`, `or`, `not`";
    SyntaxCharacter = "gw::syntax::character", "a character no name or keyword contains (a NUL byte, a look-alike letter), outside a string";
    SyntaxEscape = "gw::syntax::escape", "an escape a string does not know, like `\\q`";
    CacheInvalid = "gw::cache_invalid", "a `cache` that cannot apply: on a route that does not forward, a WebSocket route, or given twice";
    UndefinedLimit = "gw::undefined_limit", "`limit use` names a shared limit that is not declared";
    JwtInvalid = "gw::jwt_invalid", "a `jwt` set gw cannot verify with: an unknown or `none` algorithm, key material that does not fit it, an unreadable key file";
    CorsInvalid = "gw::cors_invalid", "a `cors` that is unsafe or malformed: `\"*\"` with `credentials`, an origin that is not `scheme://host[:port]`";
    AuthInvalid = "gw::auth_invalid", "an `auth` that names a credential set in a way it cannot be read (`via` on a `basic` set, a set twice)";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
    pub primary: bool,
}

/// One diagnostic: what is wrong, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diag {
    pub fn error(code: Code, message: impl Into<String>) -> Diag {
        Diag { code, severity: Severity::Error, message: message.into(), labels: vec![], help: None }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Diag {
        Diag { code, severity: Severity::Warning, message: message.into(), labels: vec![], help: None }
    }

    pub fn bug(message: impl Into<String>) -> Diag {
        Diag { code: Code::Bug, severity: Severity::Bug, message: message.into(), labels: vec![], help: None }
    }

    /// The label that says what is wrong here.
    pub fn primary(mut self, span: Span, text: impl Into<String>) -> Diag {
        self.labels.push(Label { span, text: text.into(), primary: true });
        self
    }

    /// A label pointing at something related ("first defined here").
    pub fn secondary(mut self, span: Span, text: impl Into<String>) -> Diag {
        self.labels.push(Label { span, text: text.into(), primary: false });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity >= Severity::Error
    }

    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).or(self.labels.first()).map(|l| l.span)
    }

    /// A miette report over an excerpt of the files its labels point into.
    pub fn to_report(&self, sources: &Sources) -> Rendered {
        let (source, labels, unplaced) = Excerpt::build(&self.labels, sources);
        let mut help = self.help.clone();
        for u in unplaced {
            let note = format!("{}: {}", u.at, u.text);
            help = Some(match help {
                Some(h) => format!("{h}\n{note}"),
                None => note,
            });
        }
        Rendered { code: self.code, severity: self.severity, message: self.message.clone(), help, source, labels }
    }
}

/// A `Diag` ready for miette's renderers.
#[derive(Debug)]
pub struct Rendered {
    code: Code,
    severity: Severity,
    message: String,
    help: Option<String>,
    source: Excerpt,
    labels: Vec<LabeledSpan>,
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rendered {}

impl miette::Diagnostic for Rendered {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code.as_str()))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Warning => miette::Severity::Warning,
            Severity::Error | Severity::Bug => miette::Severity::Error,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.labels.is_empty() {
            None
        } else {
            Some(&self.source)
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            None
        } else {
            Some(Box::new(self.labels.iter().cloned()))
        }
    }
}

/// How to draw reports: with colour and unicode on a terminal, plain ASCII otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Fancy,
    Plain,
}

/// Render one diagnostic as text, the way people read it.
pub fn render(diag: &Diag, sources: &Sources, style: Style) -> String {
    let report = diag.to_report(sources);
    let theme = match style {
        Style::Fancy => miette::GraphicalTheme::unicode(),
        Style::Plain => miette::GraphicalTheme::unicode_nocolor(),
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    if handler.render_report(&mut out, &report).is_err() {
        out = format!("{}: {}\n", diag.code, diag.message);
    }
    if diag.severity == Severity::Bug {
        out.push_str("  this is a bug in gw, not in your policy: please report it with the policy attached\n");
    }
    out
}

/// The machine-readable form of one diagnostic (`gw-check --format json`).
#[derive(Debug, Clone, Serialize)]
pub struct JsonDiag {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub byte_start: Option<u32>,
    pub byte_end: Option<u32>,
    pub label: Option<String>,
    pub help: Option<String>,
}

pub fn to_json(diag: &Diag, sources: &Sources) -> JsonDiag {
    let primary = diag.labels.iter().find(|l| l.primary).or(diag.labels.first());
    let (file, start, end) = match primary {
        Some(l) => (
            sources.get(l.span.file).map(|f| f.name.clone()),
            Some(sources.line_col(l.span.file, l.span.start)),
            Some(sources.line_col(l.span.file, l.span.end)),
        ),
        None => (None, None, None),
    };
    JsonDiag {
        code: diag.code.as_str(),
        severity: diag.severity,
        message: diag.message.clone(),
        file,
        line: start.map(|s| s.0),
        column: start.map(|s| s.1),
        end_line: end.map(|e| e.0),
        end_column: end.map(|e| e.1),
        byte_start: primary.map(|l| l.span.start),
        byte_end: primary.map(|l| l.span.end),
        label: primary.map(|l| l.text.clone()),
        help: diag.help.clone(),
    }
}

/// "did you mean `x`?" for a misspelled name, if one candidate is close enough.
pub fn did_you_mean<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(name, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
