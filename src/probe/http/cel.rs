//! `fail_if_body_json_matches_cel` / `fail_if_body_json_not_matches_cel` (blackbox 0.26+): the
//! body read as JSON and bound to `body`, then a Common Expression Language expression over it
//! (the `cel` crate), compiled at load. The probe fails when the body is not JSON, when the
//! expression does not give a bool or cannot be evaluated, or when it gives the failing answer.

use std::sync::Arc;

use crate::probe::report::Family;
use crate::values::FieldError;

/// `probe_failed_due_to_cel` (only for modules with an expression).
pub static PROBE_FAILED_DUE_TO_CEL: Family = Family::gauge(
    "probe_failed_due_to_cel",
    "Indicates if probe failed due to CEL expression not matching",
);

/// One compiled expression.
pub struct Expr {
    program: cel::Program,
    /// As written, for messages.
    pub text: String,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expr").field(&self.text).finish()
    }
}

/// A module's expressions.
#[derive(Debug, Default, Clone)]
pub struct Checks {
    /// Fails the probe when it is true.
    pub matches: Option<Arc<Expr>>,
    /// Fails the probe when it is false.
    pub not_matches: Option<Arc<Expr>>,
}

fn compile(text: &str, path: &str) -> Result<Arc<Expr>, FieldError> {
    match cel::Program::compile(text) {
        Ok(program) => Ok(Arc::new(Expr {
            program,
            text: text.to_owned(),
        })),
        // blackbox's message, with the parser's reason after it.
        Err(e) => Err(FieldError::new(
            path,
            format!(
                "\"Could not compile CEL program\" expression=\"{text}\": {}",
                crate::values::first_line(&e.to_string())
            ),
        )),
    }
}

impl Checks {
    /// Compiles the section's expressions; `None` when it has none.
    pub fn build(
        matches: Option<&str>,
        not_matches: Option<&str>,
    ) -> Result<Option<Checks>, FieldError> {
        if matches.is_none() && not_matches.is_none() {
            return Ok(None);
        }
        Ok(Some(Checks {
            matches: matches
                .map(|t| compile(t, "fail_if_body_json_matches_cel"))
                .transpose()?,
            not_matches: not_matches
                .map(|t| compile(t, "fail_if_body_json_not_matches_cel"))
                .transpose()?,
        }))
    }

    /// Judges `body`: `Err` says why the probe fails.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        let json: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let value =
            cel::to_value(&json).map_err(|e| format!("the body cannot be given to CEL: {e}"))?;
        let mut context = cel::Context::default();
        context.add_variable_from_value("body", value);
        let eval = |e: &Expr| -> Result<bool, String> {
            match e.program.execute(&context) {
                Ok(cel::Value::Bool(b)) => Ok(b),
                Ok(other) => Err(format!(
                    "CEL expression {:?} gave {other:?}, not a boolean",
                    e.text
                )),
                Err(err) => Err(format!("evaluating CEL expression {:?}: {err}", e.text)),
            }
        };
        if let Some(e) = &self.matches
            && eval(e)?
        {
            return Err(format!("body matched CEL expression {:?}", e.text));
        }
        if let Some(e) = &self.not_matches
            && !eval(e)?
        {
            return Err(format!("body did not match CEL expression {:?}", e.text));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_judge_json_bodies() {
        let c = Checks::build(
            Some("body.status == 'down'"),
            Some("body.items.size() > 1 && body.count >= 2"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.check(br#"{"status":"up","items":[1,2],"count":2}"#),
            Ok(())
        );
        assert!(
            c.check(br#"{"status":"down","items":[1,2],"count":2}"#)
                .unwrap_err()
                .contains("matched")
        );
        assert!(
            c.check(br#"{"status":"up","items":[1],"count":2}"#)
                .unwrap_err()
                .contains("did not match")
        );
        assert!(c.check(b"not json").unwrap_err().contains("not JSON"));
        let n = Checks::build(None, Some("body.count")).unwrap().unwrap();
        assert!(
            n.check(br#"{"count":2}"#)
                .unwrap_err()
                .contains("not a boolean")
        );
        let e = Checks::build(Some("body.("), None).unwrap_err();
        assert_eq!(e.path, "fail_if_body_json_matches_cel");
        assert!(
            e.message
                .starts_with("\"Could not compile CEL program\" expression=\"body.(\""),
            "{}",
            e.message
        );
        assert!(Checks::build(None, None).unwrap().is_none());
    }
}
