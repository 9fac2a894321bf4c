//! A request rate, as settings and keys give it (`100/s`).

/// A request rate: `N/s`, at least 1 a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate(std::num::NonZeroU32);

impl Rate {
    pub fn per_second(count: u32) -> Option<Self> {
        std::num::NonZeroU32::new(count).map(Self)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let count = text
            .trim()
            .strip_suffix("/s")
            .ok_or_else(|| format!("{text:?} is not a rate like 100/s"))?;
        count
            .parse::<u32>()
            .ok()
            .and_then(Self::per_second)
            .ok_or_else(|| format!("{text:?}: the rate must be 1/s to {}/s", u32::MAX))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/s", self.0)
    }
}
