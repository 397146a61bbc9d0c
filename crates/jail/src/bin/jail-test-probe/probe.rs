pub fn main() -> i32 {
    eprintln!("PROBE-OK hello");
    0
}
