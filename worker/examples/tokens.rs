//! Prints the token ids of a text under the model's tokenizer.
use hx_worker::model::gguf::Gguf;
use hx_worker::model::tokenizer::Tokenizer;
fn main() -> anyhow::Result<()> {
    let g = Gguf::load(&hx_worker::model::fetch::default_model_path())?;
    let t = Tokenizer::from_gguf(&g)?;
    for text in std::env::args().skip(1) {
        let ids = t.encode(&text);
        println!("{ids:?}");
        println!(
            "{:?}",
            ids.iter().map(|&i| t.decode(&[i])).collect::<Vec<_>>()
        );
    }
    Ok(())
}
