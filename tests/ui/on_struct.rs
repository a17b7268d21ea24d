use cachet::cached;

#[cached]
struct Flight;

fn main() {}
