use cache_aside::cached;

#[cached]
struct Flight;

fn main() {}
