//! The status a link redirects with: one type from the API through the
//! stores and caches to the HTTP answer, instead of integers converted (and
//! re-checked) at every hop.

/// 301 and 308 are permanent (browsers may cache them), 302 and 307 are
/// not; 307 and 308 keep the request's method, 301 and 302 may turn it into
/// a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RedirectStatus {
    /// 301.
    MovedPermanently,
    /// 302, the default.
    #[default]
    Found,
    /// 307.
    TemporaryRedirect,
    /// 308.
    PermanentRedirect,
}

impl RedirectStatus {
    pub const ALL: [Self; 4] = [
        Self::MovedPermanently,
        Self::Found,
        Self::TemporaryRedirect,
        Self::PermanentRedirect,
    ];

    /// The HTTP status code.
    pub const fn code(self) -> u16 {
        match self {
            Self::MovedPermanently => 301,
            Self::Found => 302,
            Self::TemporaryRedirect => 307,
            Self::PermanentRedirect => 308,
        }
    }

    /// The code as the stores' `smallint` column holds it.
    pub const fn column(self) -> i16 {
        match self {
            Self::MovedPermanently => 301,
            Self::Found => 302,
            Self::TemporaryRedirect => 307,
            Self::PermanentRedirect => 308,
        }
    }

    /// The status with HTTP code `code`, if it is one of the four.
    pub fn from_code(code: impl Into<i64>) -> Option<Self> {
        let code = code.into();
        Self::ALL
            .into_iter()
            .find(|status| i64::from(status.code()) == code)
    }

    /// Whether browsers may keep it (301, 308).
    pub const fn is_permanent(self) -> bool {
        matches!(self, Self::MovedPermanently | Self::PermanentRedirect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_nothing_else_parses() {
        for status in RedirectStatus::ALL {
            assert_eq!(RedirectStatus::from_code(status.code()), Some(status));
            assert_eq!(i64::from(status.column()), i64::from(status.code()));
        }
        for code in [0_i64, 200, 300, 303, 304, 309, -302, 70_000] {
            assert_eq!(RedirectStatus::from_code(code), None, "{code}");
        }
        assert_eq!(RedirectStatus::default().code(), 302);
        assert!(RedirectStatus::PermanentRedirect.is_permanent());
        assert!(!RedirectStatus::TemporaryRedirect.is_permanent());
    }
}
