use cache_aside::cached;

// A share of hits is a number in (0, 1].
#[cached(ns = "count", verify = 2.0)]
async fn count(n: u32) -> u32 {
    n
}

// The probe runs in the background: not with `refresh = "inline"`.
#[cached(ns = "total", verify = 0.01, stale = "1m", refresh = "inline")]
async fn total(n: u32) -> u32 {
    n
}

fn main() {}
